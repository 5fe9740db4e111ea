"""AdaIN style transfer (Huang & Belongie, ICCV 2017) with user-supplied weights.

Encoder: VGG-19 up to relu4_1 in torchvision's layer layout (``vgg19().features[:21]``, ImageNet
normalisation), so torchvision's VGG-19 weights file works as is. Decoder: the mirror network of
the paper (reflection padding, nearest upsampling), in the layout of the widely used PyTorch port
(``decoder.pth``). For temporal consistency the content statistics are pooled over all frames of a
clip by default: each frame's features then go through the same affine map, and every frame gets
the same style statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from stbias.errors import StbiasError
from stbias.io import load_tensors
from stbias.stylization.base import Stylizer
from stbias.stylization.images import load_style_image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CONTENT_STATS = ("clip", "frame")


def vgg19_relu4_1() -> nn.Sequential:
    """VGG-19 ``features[:21]`` (conv1_1 ... relu4_1), torchvision's module indices."""
    from torchvision.models.vgg import cfgs, make_layers

    # torchvision's own feature builder, without initialising the unused 120M-weight classifier
    return make_layers(cfgs["E"], batch_norm=False)[:21]


def adain_decoder() -> nn.Sequential:
    """The AdaIN decoder: relu4_1 features (512 channels, stride 8) -> RGB image."""

    def block(cin: int, cout: int, relu: bool = True) -> list[nn.Module]:
        layers: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3)]
        return layers + [nn.ReLU()] if relu else layers

    up = nn.Upsample(scale_factor=2, mode="nearest")
    layers = block(512, 256) + [up]
    layers += block(256, 256) + block(256, 256) + block(256, 256) + block(256, 128) + [up]
    layers += block(128, 128) + block(128, 64) + [up]
    layers += block(64, 64) + block(64, 3, relu=False)
    return nn.Sequential(*layers)


def adain(
    content: torch.Tensor,
    style_mean: torch.Tensor,
    style_std: torch.Tensor,
    dims: Sequence[int],
    eps: float = 1e-5,
) -> torch.Tensor:
    """Adaptive instance normalisation: content statistics over ``dims`` -> the style's.

    Args:
        content: features whose channel axis is broadcast against ``style_mean``/``style_std``.
        style_mean: per-channel target means, broadcastable to ``content``.
        style_std: per-channel target standard deviations, broadcastable to ``content``.
        dims: the axes the content mean and (population) standard deviation are pooled over.
    """
    mean = content.mean(dim=tuple(dims), keepdim=True)
    std = (content.var(dim=tuple(dims), keepdim=True, unbiased=False) + eps).sqrt()
    return (content - mean) / std * style_std + style_mean


def load_weights(module: nn.Module, path: str, what: str) -> None:
    """Load a state dict saved with ``torch.save`` into ``module`` (``weights_only=True``).

    Prefixes ``features.`` (a whole torchvision VGG-19) and ``decoder.``/``module.`` are
    stripped; keys the module does not have (a VGG's classifier, deeper layers) are ignored,
    missing keys or wrong shapes are errors.
    """
    file = Path(path).expanduser()
    state = load_tensors(file, what=f"{what} weights file")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise StbiasError(f"{what} weights {str(file)!r} are not a state dict")
    own = module.state_dict()
    clean = {}
    for key, value in state.items():
        for prefix in ("module.", "features.", "decoder."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        if key in own:
            clean[key] = value
    missing = [k for k in own if k not in clean]
    if missing:
        raise StbiasError(
            f"{what} weights {str(file)!r} lack {len(missing)} tensors, e.g. {missing[:3]}; "
            f"expected the keys of {what} ({', '.join(list(own)[:4])}, ...)"
        )
    bad = [k for k in own if clean[k].shape != own[k].shape]
    if bad:
        k = bad[0]
        raise StbiasError(
            f"{what} weights {str(file)!r}: {k} has shape {tuple(clean[k].shape)}, "
            f"expected {tuple(own[k].shape)}"
        )
    module.load_state_dict(clean)


class AdaINStylizer(Stylizer):
    """AdaIN stylization of every frame with one style's relu4_1 statistics per clip.

    Args:
        encoder: path of the VGG-19 weights (torchvision layout; a full ``vgg19`` state dict or
            only its first 21 feature layers).
        decoder: path of the decoder weights (``adain_decoder`` layout).
        styles: style images: embedded names (``china``, ``flower``, ...) or image paths.
        alpha: content-style trade-off in [0, 1] (1 = full style).
        content_stats: ``"clip"`` pools the content statistics over all frames (one transform
            per clip); ``"frame"`` is the paper's per-image normalisation.
        style_size: longer side of the style images fed to the encoder.
        chunk: frames per encoder/decoder forward, to bound memory.
    """

    name = "adain"

    def __init__(
        self,
        encoder: str | None,
        decoder: str | None,
        styles: Sequence[str] = ("china", "flower", "coffee", "chelsea"),
        alpha: float = 1.0,
        content_stats: str = "clip",
        style_size: int = 256,
        chunk: int = 16,
    ):
        if not encoder or not decoder:
            raise StbiasError(
                "adain needs weight files: set stylization.stylizer.encoder=<vgg19 .pth> and "
                f"stylization.stylizer.decoder=<decoder .pth>; got encoder={encoder!r}, "
                f"decoder={decoder!r}"
            )
        if not 0.0 <= float(alpha) <= 1.0:
            raise StbiasError(f"AdaIN alpha must be in [0, 1]; got {alpha}")
        if content_stats not in CONTENT_STATS:
            raise StbiasError(
                f"unknown content_stats {content_stats!r}; valid: {', '.join(CONTENT_STATS)}"
            )
        self.encoder = vgg19_relu4_1().eval().requires_grad_(False)
        self.decoder = adain_decoder().eval().requires_grad_(False)
        load_weights(self.encoder, encoder, "VGG-19 encoder")
        load_weights(self.decoder, decoder, "AdaIN decoder")
        self.styles = tuple(str(s) for s in styles)
        if not self.styles:
            raise StbiasError("AdaINStylizer needs at least one style image")
        self.style_images = [load_style_image(s, max_side=style_size) for s in self.styles]
        self.alpha = float(alpha)
        self.content_stats = content_stats
        self.chunk = int(chunk)
        self._stats: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def _to(self, device: torch.device) -> None:
        if next(self.encoder.parameters()).device != device:
            self.encoder.to(device)
            self.decoder.to(device)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` in [0, 1] -> relu4_1 features ``(N, 512, H / 8, W / 8)``."""
        mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return torch.cat([self.encoder((x - mean) / std) for x in images.split(self.chunk)])

    def style_stats(self, style: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and standard deviation ``(512,)`` of a style image's relu4_1."""
        key = (style, device)
        if key not in self._stats:
            feats = self.encode(self.style_images[style][None].to(device))[0]
            self._stats[key] = (feats.mean((1, 2)), feats.var((1, 2), unbiased=False).sqrt())
        return self._stats[key]

    @torch.no_grad()
    def _stylize(self, clip01: torch.Tensor, styles: list[int], **context) -> torch.Tensor:
        b, c, t, h, w = clip01.shape
        device = clip01.device
        self._to(device)
        frames = clip01.float().permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w).expand(-1, 3, -1, -1)
        ph, pw = (-h) % 8, (-w) % 8
        if ph or pw:
            mode = "reflect" if min(h, w) > max(ph, pw) else "replicate"
            frames = F.pad(frames, (0, pw, 0, ph), mode=mode)
        feats = self.encode(frames)
        feats = feats.view(b, t, *feats.shape[1:])
        stats = [self.style_stats(s, device) for s in styles]
        mean = torch.stack([m for m, _ in stats]).view(b, 1, -1, 1, 1)
        std = torch.stack([s for _, s in stats]).view(b, 1, -1, 1, 1)
        dims = (1, 3, 4) if self.content_stats == "clip" else (3, 4)
        target = adain(feats, mean, std, dims)
        target = self.alpha * target + (1 - self.alpha) * feats
        target = target.flatten(0, 1)
        out = torch.cat([self.decoder(x) for x in target.split(self.chunk)])[:, :, :h, :w]
        out = out.reshape(b, t, 3, h, w).permute(0, 2, 1, 3, 4)
        if c == 1:
            out = (out * out.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1, 1)).sum(1, True)
        return out.to(clip01.dtype)
