"""Two-stream (RGB + optical flow) video object segmentation nets with selectable cross connections.

The family Kowal et al. (CVPR'22, Sec. 4.1.2) probe: an appearance encoder on the RGB frame and a
motion encoder on the flow image (flow rendered as RGB: hue = direction, saturation = magnitude),
both timm backbones (``features_only=True``), with

* cross connections after every chosen stage: ``none`` (FusionSeg-like late fusion),
  ``motion_to_appearance`` (MATNet-like), ``appearance_to_motion`` or ``bidirectional``
  (RTNet-like). A connection re-weights the target stream's features by a sigmoid gate computed
  from the source stream, ``x' = x * 2 sigmoid(conv1x1(source))``: the simplest form of MATNet's
  motion-attentive transition, and applied both ways, of RTNet's reciprocal transformation;
* fusion layers at chosen stages: the two streams concatenated, then 1x1 and 3x3 convolutions
  back to the stage's width;
* a light decoder: top-down from the deepest fusion layer, upsampling and concatenating each
  shallower one, to a one-channel mask at 1/4 resolution, upsampled to the input.

Every stage is tapped through identity modules whose paths do not depend on the variant:
``app_taps.<i>`` and ``mot_taps.<i>`` (i = 0 .. 3 for res2 .. res5) hold each stream's stage output
after the cross connection (what the next stage receives, as the paper probes) and
``fusion_taps.res<k>`` the output of fusion layer ``k``.
Inputs are ``[rgb, flow]``, each ``(B, 3, T, H, W)`` (frame ``t`` with the flow from ``t`` to
``t + 1``; frames are segmented independently) or ``(B, 3, H, W)``; the output is the mask logits
``(B, 1, T, H, W)`` (or ``(B, 1, H, W)``). Tapped features are laid out ``(B, C, T, h, w)``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stbias.errors import StbiasError
from stbias.models.weights import extract_state_dict, load_state_dict_into, read_weights_file

log = logging.getLogger(__name__)

CROSS = ("none", "motion_to_appearance", "appearance_to_motion", "bidirectional")
STAGES = (2, 3, 4, 5)
STRIDES = (4, 8, 16, 32)  # the output strides of stages res2 .. res5


def _conv_bn_relu(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class Gate(nn.Module):
    """``target * 2 sigmoid(conv1x1(source))``: the source stream re-weights the target's units."""

    def __init__(self, source_channels: int, target_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(source_channels, target_channels, 1)

    def forward(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        return target * (2.0 * torch.sigmoid(self.conv(source)))


class Fusion(nn.Module):
    """Concatenate the two streams and reduce to ``channels`` (1x1 then 3x3 convolution)."""

    def __init__(self, app_channels: int, mot_channels: int, channels: int):
        super().__init__()
        self.reduce = _conv_bn_relu(app_channels + mot_channels, channels, 1)
        self.mix = _conv_bn_relu(channels, channels, 3)

    def forward(self, app: torch.Tensor, mot: torch.Tensor) -> torch.Tensor:
        return self.mix(self.reduce(torch.cat([app, mot], dim=1)))


class Tap(nn.Identity):
    """An identity in ``(B, C, T, h, w)`` layout: the probe's hook point for one stage."""


def _timm_encoder(backbone: str, pretrained: bool, weights_file: str | None) -> nn.Module:
    import timm

    if backbone not in timm.list_models() and backbone.split(".")[0] not in timm.list_models():
        raise StbiasError(
            f"unknown timm backbone {backbone!r}; e.g. resnet18, resnet34, resnet50 "
            "(timm.list_models() lists them)"
        )
    if pretrained and weights_file is None:
        try:
            return timm.create_model(backbone, pretrained=True, features_only=True)
        except Exception as err:  # noqa: BLE001 - hub, network and cache errors all end here
            raise StbiasError(
                f"could not load timm's pretrained {backbone} ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}). Without network, fetch "
                f"timm's {backbone} weights (model.safetensors or pytorch_model.bin) on another "
                "machine and pass them: model.backbone_weights=/path/to/model.safetensors"
            ) from None
    encoder = timm.create_model(backbone, pretrained=False, features_only=True)
    if pretrained:
        load_backbone_file(encoder, weights_file, backbone)
    return encoder


def read_state_file(path: str) -> dict[str, torch.Tensor]:
    """A state dict from a local ``.safetensors`` file or a torch file (tensors only)."""
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise StbiasError(f"model.backbone_weights={path!r} is not a file")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except Exception as err:  # noqa: BLE001 - a damaged file of any kind
            raise StbiasError(f"cannot read {path!r} as safetensors ({err})") from None
    return extract_state_dict(read_weights_file(path), path)[0]


def load_backbone_file(encoder: nn.Module, path: str, backbone: str) -> None:
    """Load a timm classification state dict (ImageNet weights) into a features-only encoder.

    The classifier's keys (``pretrained_cfg["classifier"]``, e.g. ``fc``) are dropped, as timm
    does for ``features_only`` models; every other key must fit.
    """
    state = read_state_file(path)
    classifier = str(getattr(encoder, "pretrained_cfg", {}).get("classifier") or "fc")
    state = {k: v for k, v in state.items() if not k.startswith(classifier + ".")}
    load_state_dict_into(encoder, state, strict=True, path=str(path))
    log.info("loaded %s backbone weights from %s", backbone, path)


def _flat(name: str) -> str:
    return name.replace(".", "_")


def _sequence(
    module: nn.Module, targets: set[str], prefix: str = ""
) -> list[tuple[str, nn.Module]]:
    """The module's children in order, containers holding a target expanded into theirs."""
    out = []
    for name, child in module.named_children():
        full = _flat(prefix + name)
        if full not in targets and any(t.startswith(full + "_") for t in targets):
            out += _sequence(child, targets, full + "_")
        else:
            out.append((full, child))
    return out


def split_stages(encoder: nn.Module, backbone: str) -> tuple[nn.ModuleList, list[int]]:
    """The features-only encoder cut into four stages ending at its stride-4, 8, 16 and 32 maps.

    Returns the stages and their channels. The cut is checked on a random image against the
    encoder's own forward: a backbone that does not run as a sequence of its modules is refused.
    """
    info = encoder.feature_info
    reductions, names = list(info.reduction()), [_flat(n) for n in info.module_name()]
    chosen = []
    for stride in STRIDES:
        found = [i for i, r in enumerate(reductions) if r == stride]
        if not found:
            raise StbiasError(
                f"timm backbone {backbone} has feature maps at strides {reductions}; two-stream "
                f"models need one at each of {', '.join(map(str, STRIDES))}"
            )
        chosen.append(found[-1])
    targets = {names[i] for i in chosen}
    stages, current = [], []
    for name, module in _sequence(encoder, targets):
        current.append(module)
        if name in targets:
            stages.append(nn.Sequential(*current))
            current = []
    stages = nn.ModuleList(stages)
    if len(stages) != len(STRIDES) or not _same_features(encoder, stages, chosen):
        raise StbiasError(
            f"timm backbone {backbone} does not run as a sequence of its modules, so it cannot "
            "be cut into stages; use e.g. resnet18/34/50 or another sequential CNN"
        )
    return stages, [int(info.channels()[i]) for i in chosen]


def _same_features(encoder: nn.Module, stages: nn.ModuleList, chosen: list[int]) -> bool:
    """Whether running ``stages`` in turn gives the encoder's own feature maps."""
    training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
            reference = [encoder(x)[i] for i in chosen]
            ours = []
            for stage in stages:
                x = stage(x)
                ours.append(x)
    except Exception:  # noqa: BLE001 - a cut that cannot run is refused like one that differs
        return False
    finally:
        encoder.train(training)
    return all(
        a.shape == b.shape and torch.allclose(a, b, atol=1e-5) for a, b in zip(ours, reference)
    )


class Stream(nn.Module):
    """One encoder as four stages (res2 .. res5)."""

    def __init__(self, backbone: str, pretrained: bool, weights_file: str | None):
        super().__init__()
        encoder = _timm_encoder(backbone, pretrained, weights_file)
        self.stages, self.channels = split_stages(encoder, backbone)


class TwoStreamSeg(nn.Module):
    """Appearance (RGB) and motion (flow image) encoders, cross connections, fusion, decoder.

    Args:
        backbone: timm model name of the appearance encoder (``resnet18``, ``resnet34``, ...).
        motion_backbone: timm model of the motion encoder; default the same as ``backbone``.
        cross: ``none``, ``motion_to_appearance``, ``appearance_to_motion`` or ``bidirectional``.
        cross_stages: the stages (2 .. 5) after which the cross connections act.
        fusion_stages: the stages (2 .. 5) with a fusion layer; the decoder reads them.
        fusion_channels: width of every fusion layer; ``None``: the appearance stage's width.
        decoder_channels: width of the decoder.
        pretrained: ImageNet weights for both encoders, through timm's own loader (online or
            timm's cache), or from ``backbone_weights`` when given.
        backbone_weights: a local timm state dict (``.safetensors`` or a torch file) for both
            encoders (with a different ``motion_backbone``, for the appearance encoder only).
    """

    def __init__(
        self,
        *,
        backbone: str = "resnet18",
        motion_backbone: str | None = None,
        cross: str = "none",
        cross_stages: Sequence[int] = STAGES,
        fusion_stages: Sequence[int] = STAGES,
        fusion_channels: int | None = None,
        decoder_channels: int = 64,
        pretrained: bool = False,
        backbone_weights: str | None = None,
    ):
        super().__init__()
        if cross not in CROSS:
            raise StbiasError(f"unknown cross connection {cross!r}; valid: {', '.join(CROSS)}")
        cross_stages, fusion_stages = (
            _stages(cross_stages, "cross_stages"),
            _stages(fusion_stages, "fusion_stages"),
        )
        if not fusion_stages:
            raise StbiasError("fusion_stages needs at least one stage of 2, 3, 4, 5")
        if backbone_weights and not pretrained:
            raise StbiasError(
                "model.backbone_weights is the local copy of the pretrained backbone: set "
                "model.pretrained=true with it (or model.backbone_weights=null)"
            )
        for key, value in (
            ("decoder_channels", decoder_channels),
            ("fusion_channels", fusion_channels),
        ):
            if value is not None and int(value) < 1:
                raise StbiasError(f"{key} must be >= 1, got {value}")
        motion_backbone = motion_backbone or backbone
        motion_file = backbone_weights if motion_backbone == backbone else None
        if pretrained and backbone_weights and motion_file is None:
            raise StbiasError(
                f"model.backbone_weights holds {backbone} weights; the motion encoder "
                f"{motion_backbone} needs its own: use one backbone or model.pretrained=false"
            )
        self.cross = cross
        self.cross_stages = cross_stages
        self.fusion_stages = fusion_stages
        self.appearance = Stream(backbone, pretrained, backbone_weights)
        self.motion = Stream(motion_backbone, pretrained, motion_file)
        app_ch, mot_ch = self.appearance.channels, self.motion.channels
        to_app = cross in ("motion_to_appearance", "bidirectional")
        to_mot = cross in ("appearance_to_motion", "bidirectional")
        self.to_appearance = nn.ModuleDict(
            {f"res{k}": Gate(mot_ch[k - 2], app_ch[k - 2]) for k in cross_stages if to_app}
        )
        self.to_motion = nn.ModuleDict(
            {f"res{k}": Gate(app_ch[k - 2], mot_ch[k - 2]) for k in cross_stages if to_mot}
        )
        self.app_taps = nn.ModuleList(Tap() for _ in STAGES)
        self.mot_taps = nn.ModuleList(Tap() for _ in STAGES)
        self.fusion_width = {
            k: int(fusion_channels) if fusion_channels else app_ch[k - 2] for k in fusion_stages
        }
        self.fusions = nn.ModuleDict(
            {
                f"res{k}": Fusion(app_ch[k - 2], mot_ch[k - 2], self.fusion_width[k])
                for k in fusion_stages
            }
        )
        self.fusion_taps = nn.ModuleDict({f"res{k}": Tap() for k in fusion_stages})
        deepest = max(fusion_stages)
        width = int(decoder_channels)
        self.decoder = nn.ModuleDict(
            {f"res{deepest}": _conv_bn_relu(self.fusion_width[deepest], width, 1)}
        )
        for k in sorted(fusion_stages, reverse=True)[1:]:
            self.decoder[f"res{k}"] = _conv_bn_relu(width + self.fusion_width[k], width, 3)
        self.head = nn.Conv2d(width, 1, 1)

    @property
    def channels(self) -> dict[str, int]:
        """Channels of every tap: ``app_res<k>``, ``mot_res<k>``, ``fusion<k>``."""
        out = {}
        for k in STAGES:
            out[f"app_res{k}"] = self.appearance.channels[k - 2]
            out[f"mot_res{k}"] = self.motion.channels[k - 2]
        for k in self.fusion_stages:
            out[f"fusion{k}"] = self.fusion_width[k]
        return out

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """``[rgb, flow]`` -> mask logits (see the module docstring for shapes)."""
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise StbiasError(
                "a two-stream model takes [rgb, flow image] (model.input.flow=true packs them); "
                f"got {type(inputs).__name__}"
            )
        rgb, flow = inputs
        if rgb.shape != flow.shape[:1] + rgb.shape[1:2] + flow.shape[2:]:
            raise StbiasError(
                f"RGB {tuple(rgb.shape)} and flow {tuple(flow.shape)} inputs do not pair"
            )
        clips = rgb.dim() == 5
        batch, frames = rgb.shape[0], rgb.shape[2] if clips else 1
        if clips:
            rgb, flow = _frames_to_batch(rgb), _frames_to_batch(flow)
        size = rgb.shape[-2:]
        app, mot, fused = rgb, flow, {}
        for i, k in enumerate(STAGES):
            app = self.appearance.stages[i](app)
            mot = self.motion.stages[i](mot)
            key = f"res{k}"
            new_app = self.to_appearance[key](app, mot) if key in self.to_appearance else app
            new_mot = self.to_motion[key](mot, app) if key in self.to_motion else mot
            app = _tap(self.app_taps[i], new_app, batch, frames)
            mot = _tap(self.mot_taps[i], new_mot, batch, frames)
            if key in self.fusions:
                fused[k] = _tap(self.fusion_taps[key], self.fusions[key](app, mot), batch, frames)
        order = sorted(fused, reverse=True)
        x = self.decoder[f"res{order[0]}"](fused[order[0]])
        for k in order[1:]:
            x = F.interpolate(x, size=fused[k].shape[-2:], mode="bilinear", align_corners=False)
            x = self.decoder[f"res{k}"](torch.cat([x, fused[k]], dim=1))
        logits = F.interpolate(self.head(x), size=size, mode="bilinear", align_corners=False)
        if clips:
            logits = logits.view(batch, frames, 1, *size).transpose(1, 2)
        return logits


def _stages(stages: Sequence[int], what: str) -> tuple[int, ...]:
    chosen = tuple(sorted({int(k) for k in stages}))
    if any(k not in STAGES for k in chosen):
        raise StbiasError(f"{what} must be stages of 2, 3, 4, 5; got {list(stages)}")
    return chosen


def _frames_to_batch(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, T, H, W)`` -> ``(B * T, C, H, W)``, frame-major within each clip."""
    return x.transpose(1, 2).reshape(-1, x.shape[1], *x.shape[3:])


def _tap(tap: Tap, x: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
    """Pass frame features ``(B * T, C, h, w)`` through ``tap`` as clips ``(B, C, T, h, w)``."""
    return _frames_to_batch(tap(_batch_to_frames(x, batch, frames)))


def _batch_to_frames(x: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
    """``(B * T, C, h, w)`` -> ``(B, C, T, h, w)`` (a view)."""
    return x.view(batch, frames, *x.shape[1:]).transpose(1, 2)


def twostream_seg(**kwargs: Any) -> TwoStreamSeg:
    """Build a :class:`TwoStreamSeg` (keyword arguments as documented there)."""
    return TwoStreamSeg(**kwargs)
