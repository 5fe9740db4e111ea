"""Per-frame place classifiers: the released Places365 CNNs and a tiny 2D CNN.

Both map images ``(N, 3, H, W)`` (normalised) to logits ``(N, classes)`` and, through
``forward_features`` / ``fc`` replaced by an identity, to pooled features.

* :func:`places365`: a torchvision architecture with the weights of the Places365 release
  (CSAILVision/places365: ``<arch>_places365.pth.tar``, a ``{"state_dict": {"module.<key>":
  tensor}}`` checkpoint written from ``torch.nn.DataParallel``), read through
  :func:`stbias.io.load_tensors` (``weights_only=True``).
* :func:`image_tiny`: a small 2D CNN (about 0.1 M parameters) for the embedded place
  photographs.
"""

from __future__ import annotations

import os

import torch
import torchvision
from torch import nn

from stbias.errors import StbiasError
from stbias.io import load_tensors

# the released architectures torchvision builds (wideresnet18 is the release's own network)
PLACES365_ARCHS = ("resnet18", "resnet50", "alexnet", "densenet161")
PLACES365_CLASSES = 365
# ImageNet statistics, which the Places365 CNNs were trained with
PLACES365_MEAN = (0.485, 0.456, 0.406)
PLACES365_STD = (0.229, 0.224, 0.225)


def places365_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of a released Places365 checkpoint, ``module.`` removed from every key
    (and densenet's ``norm.1``-style names as torchvision spells them, ``norm1``)."""
    loaded = load_tensors(path, what="Places365 weights file")
    state = loaded.get("state_dict") if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or not state:
        keys = ", ".join(map(str, list(loaded)[:5])) if isinstance(loaded, dict) else ""
        raise StbiasError(
            f"Places365 weights file {os.fspath(path)!r} holds no 'state_dict' "
            f"({type(loaded).__name__}{' with keys ' + keys if keys else ''}); the release's "
            "<arch>_places365.pth.tar files hold {'state_dict': {'module.<key>': tensor}}"
        )
    out = {}
    for key, value in state.items():
        key = str(key).replace("module.", "")
        for old, new in ((".norm.", ".norm"), (".relu.", ".relu"), (".conv.", ".conv")):
            if old in key and "denselayer" in key:
                key = key.replace(old, new)
        out[key] = value
    return out


def places365(
    *, arch: str = "resnet18", weights: str | None = None, num_classes: int = PLACES365_CLASSES
) -> nn.Module:
    """A Places365 CNN: torchvision's ``arch`` with ``num_classes`` outputs and, when given, the
    released ``weights`` file (every key must match: a mismatch names the keys)."""
    if arch not in PLACES365_ARCHS:
        raise StbiasError(
            f"unknown Places365 architecture {arch!r}; valid: {', '.join(PLACES365_ARCHS)}"
        )
    model = getattr(torchvision.models, arch)(weights=None, num_classes=int(num_classes))
    if weights:
        state = places365_state_dict(weights)
        own = model.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
        if missing or unexpected or wrong:
            parts = [
                f"{what} {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
                for what, keys in (
                    ("missing", missing),
                    ("unexpected", unexpected),
                    ("shape mismatch", wrong),
                )
                if keys
            ]
            raise StbiasError(
                f"Places365 weights file {weights!r} does not fit {arch} with {num_classes} "
                f"classes: {'; '.join(parts)}"
            )
        model.load_state_dict(state)
    return model


class TinyImageNet(nn.Module):
    """Three strided convolution blocks, global average pooling (``pool``) and a linear
    classifier (``fc``): ``(N, 3, H, W)`` -> logits ``(N, num_classes)``."""

    def __init__(self, num_classes: int, widths: tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for width in widths:
            layers += [
                nn.Conv2d(cin, width, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
            ]
            cin = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> pooled features ``(N, C)``."""
        if x.ndim != 4:
            raise StbiasError(f"expected an (N, C, H, W) tensor; got shape {tuple(x.shape)}")
        return self.pool(self.features(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> logits ``(N, num_classes)``."""
        return self.fc(self.forward_features(x))


def image_tiny(*, num_classes: int) -> TinyImageNet:
    """The tiny 2D place classifier of the embedded data."""
    return TinyImageNet(int(num_classes))


def image_backbone(*, arch: str, weights: str) -> nn.Module:
    """A torchvision image classifier (``googlenet``, ``resnet50``, ...) with a local weights
    file, its classifier ``fc`` replaced by an identity: images ``(N, 3, H, W)`` -> pooled
    features ``(N, C)``. Auxiliary heads in the file (GoogLeNet's ``aux1``/``aux2``) are left
    out; every other key must match."""
    builder = getattr(torchvision.models, arch, None)
    if not callable(builder) or arch not in torchvision.models.list_models(torchvision.models):
        raise StbiasError(
            f"unknown torchvision image model {arch!r}; e.g. googlenet, inception_v3, resnet50"
        )
    extra = {"aux_logits": False, "init_weights": False} if arch in ("googlenet",) else {}
    model = builder(weights=None, **extra)
    loaded = load_tensors(weights, what=f"{arch} weights file")
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else loaded
    if not isinstance(state, dict):
        raise StbiasError(f"{arch} weights file {weights!r} holds no state dict")
    state = {str(k).replace("module.", ""): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2.", "AuxLogits."))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise StbiasError(
            f"{arch} weights file {weights!r} does not fit torchvision's {arch}: missing "
            f"{', '.join(missing[:4]) or 'none'}; unexpected {', '.join(unexpected[:4]) or 'none'}"
        )
    if not hasattr(model, "fc"):
        raise StbiasError(f"{arch} has no fc classifier to remove; use an architecture with fc")
    model.fc = nn.Identity()
    return model
