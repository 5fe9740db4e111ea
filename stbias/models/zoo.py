"""Model builders: pytorchvideo and torchvision video networks, and any importable constructor.

Each builder takes plain values (`pretrained`, `num_classes`, sizes) and returns an `nn.Module`.
Fixed-size average pools in front of the classifiers are replaced by global (adaptive) ones:
identical at the published input size, and they let the same network run on reduced clips.
`pretrained=True` fetches the published Kinetics-400 weights through `torch.hub` (see
`stbias.models.weights.download_state`); a `num_classes` other than 400 then gets a freshly
initialised classifier on top of the pretrained trunk.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from stbias.errors import StbiasError
from stbias.models.weights import download_state, extract_state_dict, load_state_dict_into

KINETICS_CLASSES = 400


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    if isinstance(owner, (nn.ModuleList, nn.Sequential)) and name.isdigit():
        owner[int(name)] = new
    else:
        setattr(owner, name, new)


def _global_pool(model: nn.Module, *paths: str) -> nn.Module:
    for path in paths:
        _replace(model, path, nn.AdaptiveAvgPool3d(1))
    return model


def _new_classifier(model: nn.Module, path: str, num_classes: int) -> nn.Module:
    """Swap the final linear (or 1x1x1 conv) layer at `path` for a fresh one of `num_classes`."""
    old = model.get_submodule(path)
    if isinstance(old, nn.Linear):
        if old.out_features != num_classes:
            _replace(
                model, path, nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
            )
    elif isinstance(old, nn.Conv3d):
        if old.out_channels != num_classes:
            _replace(model, path, nn.Conv3d(old.in_channels, num_classes, 1, bias=True))
    else:
        raise StbiasError(f"cannot resize classifier {path!r} of type {type(old).__name__}")
    return model


def _pretrained_pytorchvideo(model: nn.Module, url: str, name: str) -> None:
    state, _ = extract_state_dict(download_state(url, name), url)
    load_state_dict_into(model, state, strict=True, path=url)


def _no_kwargs_with_pretrained(name: str, pretrained: bool, kwargs: dict) -> None:
    if pretrained and kwargs:
        raise StbiasError(
            f"{name}: architecture options {', '.join(sorted(kwargs))} cannot be combined with "
            "model.pretrained=true (the published weights fix the architecture)"
        )


def pytorchvideo_resnet(
    arch: str, pretrained: bool = False, num_classes: int = KINETICS_CLASSES, **kwargs: Any
) -> nn.Module:
    """C2D / I3D / Slow R50 from `pytorchvideo.models.hub` (`c2d_r50`, `i3d_r50`, `slow_r50`).

    Layer paths: `blocks.0` stem, `blocks.1` res2, then for C2D and I3D `blocks.2` is a temporal
    pooling and res3-res5 are `blocks.3-5`; for Slow res3-res5 are `blocks.2-4`.
    Extra `kwargs` go to `pytorchvideo.models.resnet.create_resnet` (random weights only).
    """
    from pytorchvideo.models import hub
    from pytorchvideo.models.hub import resnet as hub_resnet

    if arch not in ("c2d_r50", "i3d_r50", "slow_r50"):
        raise StbiasError(
            f"unknown pytorchvideo resnet {arch!r}; valid: c2d_r50, i3d_r50, slow_r50"
        )
    _no_kwargs_with_pretrained(arch, pretrained, kwargs)
    classes = KINETICS_CLASSES if pretrained else num_classes
    model = getattr(hub, arch)(pretrained=False, model_num_class=classes, **kwargs)
    _global_pool(model, f"blocks.{len(model.blocks) - 1}.pool")
    if pretrained:
        _pretrained_pytorchvideo(model, hub_resnet.checkpoint_paths[arch], arch)
    return _new_classifier(model, f"blocks.{len(model.blocks) - 1}.proj", num_classes)


def fast_only_r50(
    pretrained: bool = False, num_classes: int = KINETICS_CLASSES, **kwargs: Any
) -> nn.Module:
    """FastOnly R50: SlowFast-R50's fast pathway trained on its own (32 frames, stride 2).

    Same widths (stem 8, res2-res5 32/64/128/256) and kernels (stem 5x7x7, temporal 3x1x1
    in every stage) as SlowFast's fast pathway, no lateral connections. No weights are
    published for it: train one or pass `model.checkpoint`.
    """
    from pytorchvideo.models.resnet import create_resnet

    if pretrained:
        raise StbiasError(
            "no published weights exist for fast (FastOnly); train it "
            "(python run.py task=train model=fast ...) or load a file with "
            "model.pretrained=false model.checkpoint=/path/to/weights"
        )
    options = {
        "stem_dim_out": 8,
        "stem_conv_kernel_size": (5, 7, 7),
        "stage_conv_a_kernel_size": ((3, 1, 1),) * 4,
        "head_pool_kernel_size": (32, 7, 7),
        "model_num_class": num_classes,
    }
    options.update(kwargs)
    model = create_resnet(**options)
    return _global_pool(model, "blocks.5.pool")


def slowfast_r50(
    pretrained: bool = False, num_classes: int = KINETICS_CLASSES, **kwargs: Any
) -> nn.Module:
    """SlowFast R50 8x8 (alpha 4, beta 1/8) from `pytorchvideo.models.hub.slowfast_r50`.

    Takes `[slow, fast]` inputs. `blocks.i.multipathway_blocks.0/1` are the slow/fast stage
    outputs before fusion, `blocks.i.multipathway_fusion` returns `[slow_fused, fast]`.
    """
    from pytorchvideo.models import hub
    from pytorchvideo.models.hub import slowfast as hub_slowfast

    _no_kwargs_with_pretrained("slowfast_r50", pretrained, kwargs)
    classes = KINETICS_CLASSES if pretrained else num_classes
    model = hub.slowfast_r50(pretrained=False, model_num_class=classes, **kwargs)
    _global_pool(model, "blocks.5.pool.0", "blocks.5.pool.1")
    if pretrained:
        _pretrained_pytorchvideo(model, hub_slowfast.checkpoint_paths["slowfast_r50"], "slowfast")
    return _new_classifier(model, "blocks.6.proj", num_classes)


def x3d(
    size: str = "xs", pretrained: bool = False, num_classes: int = KINETICS_CLASSES, **kwargs: Any
) -> nn.Module:
    """X3D-XS/S/M from `pytorchvideo.models.hub` (`size` one of xs, s, m).

    `blocks.1-4` are res2-res5 (24/48/96/192 channels), `blocks.5` the head.
    """
    from pytorchvideo.models import hub
    from pytorchvideo.models.hub import x3d as hub_x3d

    arch = f"x3d_{size}"
    if arch not in ("x3d_xs", "x3d_s", "x3d_m"):
        raise StbiasError(f"unknown X3D size {size!r}; valid: xs, s, m")
    _no_kwargs_with_pretrained(arch, pretrained, kwargs)
    classes = KINETICS_CLASSES if pretrained else num_classes
    model = getattr(hub, arch)(pretrained=False, model_num_class=classes, **kwargs)
    _global_pool(model, "blocks.5.pool.pool")
    if pretrained:
        _pretrained_pytorchvideo(model, hub_x3d.checkpoint_paths[arch], arch)
    return _new_classifier(model, "blocks.5.proj", num_classes)


def mvit_base_16x4(
    pretrained: bool = False,
    num_classes: int = KINETICS_CLASSES,
    spatial_size: int = 224,
    temporal_size: int = 16,
) -> nn.Module:
    """MViT-B 16x4 from pytorchvideo; `blocks.i` returns `(tokens (B, 1 + N, C), thw)`.

    The positional embedding fixes the input size: pretrained weights need 16x224x224, random
    weights any size divisible by the model's strides (e.g. 8x64x64 for tests).
    """
    from pytorchvideo.models.hub import vision_transformers as hub_vit
    from pytorchvideo.models.vision_transformers import create_multiscale_vision_transformers

    if pretrained and (spatial_size, temporal_size) != (224, 16):
        raise StbiasError(
            f"mvit pretrained weights need input.size=224 and input.frames=16, got "
            f"size={spatial_size} frames={temporal_size}"
        )
    config = dict(hub_vit.mvit_video_base_config)
    config.update(spatial_size=spatial_size, temporal_size=temporal_size)
    config["head_num_classes"] = KINETICS_CLASSES if pretrained else num_classes
    model = create_multiscale_vision_transformers(**config)
    if pretrained:
        _pretrained_pytorchvideo(model, hub_vit.checkpoint_paths["mvit_base_16x4"], "mvit")
    return _new_classifier(model, "head.proj", num_classes)


# arch -> (classifier path, fixed-size pools to make global)
_TORCHVISION = {
    "r3d_18": ("fc", ()),
    "mc3_18": ("fc", ()),
    "r2plus1d_18": ("fc", ()),
    "s3d": ("classifier.1", ("avgpool",)),
    "mvit_v2_s": ("head.1", ()),
    "swin3d_t": ("head", ()),
}


def torchvision_video(
    arch: str, pretrained: bool = False, num_classes: int = KINETICS_CLASSES, **kwargs: Any
) -> nn.Module:
    """A `torchvision.models.video` network; pretrained weights from its `*_Weights` enum."""
    import torchvision.models.video as tv
    from torchvision.models import get_model_weights

    if arch not in _TORCHVISION:
        raise StbiasError(
            f"unknown torchvision video model {arch!r}; valid: {', '.join(_TORCHVISION)}"
        )
    _no_kwargs_with_pretrained(arch, pretrained, kwargs)
    classifier, pools = _TORCHVISION[arch]
    classes = KINETICS_CLASSES if pretrained else num_classes
    model = getattr(tv, arch)(weights=None, num_classes=classes, **kwargs)
    if pretrained:
        weights = get_model_weights(arch).DEFAULT
        state = download_state(weights.url, arch, check_hash=True)
        load_state_dict_into(model, state, strict=True, path=weights.url)
    _global_pool(model, *pools)
    return _new_classifier(model, classifier, num_classes)


def import_object(target: str) -> Any:
    """Import `pkg.module.attr` or `pkg.module:attr`, explaining what failed."""
    target = str(target)
    module_name, sep, attr = target.partition(":")
    if not sep:
        module_name, _, attr = target.rpartition(".")
    if not module_name or not attr:
        raise StbiasError(
            f"constructor {target!r} is not an importable path; write module.function, "
            "e.g. torchvision.models.video.r3d_18"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise StbiasError(f"cannot import module {module_name!r} for {target!r}: {err}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise StbiasError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def custom(constructor: str | None = None, **kwargs: Any) -> nn.Module:
    """Any importable model constructor (`model=custom model.builder.constructor=pkg.mod.fn`).

    `kwargs` are passed to the constructor; layers come from `model.layers` on the command line.
    """
    if not constructor:
        raise StbiasError(
            "model=custom needs a constructor: model.builder.constructor=<module.function> "
            "(e.g. torchvision.models.video.r3d_18) and layers as "
            "'model.layers={alias: module.path}'; "
            "python run.py task=layers model=custom model.builder.constructor=... "
            "lists the module paths"
        )
    factory = import_object(constructor)
    if not callable(factory):
        raise StbiasError(f"constructor {constructor!r} is not callable")
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise StbiasError(
            f"constructor {constructor!r} returned a {type(model).__name__}, not a torch nn.Module"
        )
    return model
