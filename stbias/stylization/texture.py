"""Weight-free, temporally consistent styles: a random convolution plus colour transfer.

Every operation is shift-equivariant (a convolution, then per-pixel maps) and its parameters are
fixed per clip: the convolution kernel belongs to the style, and the colour maps are computed from
statistics pooled over all frames of the clip. So each frame of a clip goes through the same
transform, a static clip stays static, and motion is preserved while colour, intensity and texture
change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from stbias.errors import StbiasError
from stbias.stylization.base import Stylizer
from stbias.stylization.images import EMBEDDED_IMAGES, load_style_image, to_channels


@dataclass(frozen=True)
class TextureStyle:
    """One style: a style image (region), a random texture kernel and its weight."""

    image: str
    kernel_size: int
    texture: float
    kernel_seed: int
    crop: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)  # top, left, height, width
    hue_rotation: float = 0.0  # turns; rotates the style image's colours around the grey axis


# Fixed styles: different palettes (warm, cool, saturated, stained tissue) and kernel sizes.
NAMED_STYLES: dict[str, TextureStyle] = {
    "china": TextureStyle("china", 3, 0.6, 101),
    "flower": TextureStyle("flower", 5, 0.5, 102),
    "coffee": TextureStyle("coffee", 3, 0.7, 103),
    "chelsea": TextureStyle("chelsea", 5, 0.6, 104),
    "ihc": TextureStyle("ihc", 3, 0.8, 105),
    "rocket": TextureStyle("rocket", 7, 0.5, 106),
}

# images random styles draw from (the deep-field image is nearly black: poor for motion)
_RANDOM_IMAGES = tuple(name for name in EMBEDDED_IMAGES if name != "hubble")
_QUANTILES = 256
_SAMPLE_PIXELS = 2**16  # pixels per clip and channel that its quantiles are estimated from


def random_style(seed: int, k: int) -> TextureStyle:
    """The k-th seeded random style: a random image region, kernel size, weight and kernel."""
    rng = np.random.default_rng(np.random.SeedSequence((int(seed), int(k), 0x5717)))
    height, width = rng.uniform(0.3, 1.0, size=2)
    return TextureStyle(
        image=_RANDOM_IMAGES[int(rng.integers(len(_RANDOM_IMAGES)))],
        kernel_size=int(rng.choice([3, 5, 7])),
        texture=float(rng.uniform(0.3, 0.9)),
        kernel_seed=int(rng.integers(2**31 - 1)),
        crop=(float(rng.uniform(0, 1 - height)), float(rng.uniform(0, 1 - width)), height, width),
        hue_rotation=float(rng.uniform(0.15, 0.85)),
    )


def parse_style(spec: str, seed: int) -> TextureStyle:
    """A named style (``china``) or a seeded random one (``random:<k>``)."""
    if spec in NAMED_STYLES:
        return NAMED_STYLES[spec]
    if spec.startswith("random:") and spec[7:].isdigit():
        return random_style(seed, int(spec[7:]))
    raise StbiasError(
        f"unknown texture style {spec!r}; named styles: {', '.join(NAMED_STYLES)}, "
        "or random:<k> for the k-th seeded random style"
    )


class TextureStylizer(Stylizer):
    """Random-convolution texture plus colour and histogram transfer toward a style image.

    Per clip and style: (1) a convolution ``(1 - w) * identity + w * R`` with a seeded random
    kernel ``R`` (reflect padding) changes texture; (2) an affine colour transfer maps the clip's
    colour mean and covariance (pooled over all frames) onto the style image's; (3) a per-channel
    histogram match maps the clip's intensity quantiles onto the style image's. Batched torch;
    runs on the input's device.

    Args:
        styles: style names: keys of ``NAMED_STYLES`` or ``random:<k>``.
        num_random: appends ``random:0`` ... ``random:<num_random - 1>`` to ``styles``.
        seed: seed of the random styles.
        texture_scale: multiplies every style's texture weight (0 turns the convolution off).
    """

    name = "texture"

    def __init__(
        self,
        styles: Sequence[str] = ("china", "flower", "coffee", "chelsea", "ihc", "rocket"),
        num_random: int = 0,
        seed: int = 0,
        texture_scale: float = 1.0,
    ):
        names = [str(s) for s in styles] + [f"random:{k}" for k in range(int(num_random))]
        if len(names) < 1:
            raise StbiasError("TextureStylizer needs at least one style")
        if len(set(names)) != len(names):
            raise StbiasError(f"duplicate texture styles in {names}")
        self.styles = tuple(names)
        self.seed = int(seed)
        self.texture_scale = float(texture_scale)
        self._specs = [parse_style(n, self.seed) for n in names]
        self._params: dict[tuple[int, int], dict[str, torch.Tensor]] = {}

    def style_params(self, index: int, channels: int) -> dict[str, torch.Tensor]:
        """Kernel ``(C, C, k, k)``, colour mean/covariance root and quantiles of one style."""
        key = (index, channels)
        if key not in self._params:
            self._params[key] = _style_params(self._specs[index], channels, self.texture_scale)
        return self._params[key]

    def _stylize(self, clip01: torch.Tensor, styles: list[int], **context) -> torch.Tensor:
        b, c, t, h, w = clip01.shape
        params = [self.style_params(s, c) for s in styles]
        dev, dt = clip01.device, clip01.dtype
        size = max(p["kernel"].shape[-1] for p in params)
        kernel = torch.cat([_pad_kernel(p["kernel"], size) for p in params]).to(dev, dt)
        x = clip01.permute(2, 0, 1, 3, 4).reshape(t, b * c, h, w)
        pad = size // 2
        mode = "reflect" if min(h, w) > pad else "replicate"
        x = F.conv2d(F.pad(x, (pad, pad, pad, pad), mode=mode), kernel, groups=b)
        x = x.reshape(t, b, c, h * w).permute(1, 2, 0, 3).reshape(b, c, t * h * w)
        mean = torch.stack([p["mean"] for p in params]).to(dev, dt)
        root = torch.stack([p["cov_root"] for p in params]).to(dev, dt)
        x = colour_transfer(x, mean, root)
        quantiles = torch.stack([p["quantiles"] for p in params]).to(dev, dt)
        # quantiles from the same pixel grid in every frame: reordering frames changes nothing
        stride = max(1, int(np.ceil(np.sqrt(t * h * w / _SAMPLE_PIXELS))))
        sample = x.reshape(b, c, t, h, w)[..., ::stride, ::stride].reshape(b, c, -1)
        x = match_histograms(x, quantiles, sample)
        return x.reshape(b, c, t, h, w)


def _style_params(spec: TextureStyle, channels: int, scale: float) -> dict[str, torch.Tensor]:
    image = load_style_image(spec.image)
    _, h, w = image.shape
    top, left, ch, cw = spec.crop
    y0, x0 = int(top * h), int(left * w)
    image = image[:, y0 : y0 + max(8, int(ch * h)), x0 : x0 + max(8, int(cw * w))]
    if spec.hue_rotation:
        image = rotate_hue(image, spec.hue_rotation)
    image = to_channels(image, channels).double()
    pixels = image.reshape(channels, -1)
    mean = pixels.mean(1)
    cov = torch.cov(pixels).reshape(channels, channels)
    evals, evecs = torch.linalg.eigh(cov)
    cov_root = evecs @ torch.diag(evals.clamp_min(0).sqrt()) @ evecs.T
    positions = torch.linspace(0, 1, _QUANTILES, dtype=torch.float64)
    quantiles = torch.quantile(pixels, positions, dim=1).T.contiguous()
    gen = torch.Generator().manual_seed(spec.kernel_seed)
    k = spec.kernel_size
    rand = torch.randn(channels, channels, k, k, generator=gen, dtype=torch.float64)
    rand = rand / (rand.abs().sum(dim=(1, 2, 3), keepdim=True))
    ident = torch.zeros_like(rand)
    ident[torch.arange(channels), torch.arange(channels), k // 2, k // 2] = 1.0
    weight = min(1.0, spec.texture * scale)
    kernel = (1 - weight) * ident + weight * rand
    return {
        "kernel": kernel.float(),
        "mean": mean.float(),
        "cov_root": cov_root.float(),
        "quantiles": quantiles.float(),
    }


def rotate_hue(image: torch.Tensor, turns: float) -> torch.Tensor:
    """Rotate the colours of an RGB ``(3, H, W)`` image around the grey axis (YIQ chroma plane)."""
    to_yiq = image.new_tensor(
        [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]]
    )
    angle = 2 * np.pi * turns
    cos, sin = float(np.cos(angle)), float(np.sin(angle))
    rot = image.new_tensor([[1, 0, 0], [0, cos, -sin], [0, sin, cos]])
    matrix = torch.linalg.inv(to_yiq) @ rot @ to_yiq
    return torch.einsum("ij,jhw->ihw", matrix, image).clamp(0, 1)


def _pad_kernel(kernel: torch.Tensor, size: int) -> torch.Tensor:
    p = (size - kernel.shape[-1]) // 2
    return F.pad(kernel, (p, p, p, p))


def colour_transfer(
    x: torch.Tensor, mean: torch.Tensor, cov_root: torch.Tensor, eps: float = 1e-4
) -> torch.Tensor:
    """Map each clip's colour mean and covariance onto a target's (whitening then colouring).

    Args:
        x: ``(B, C, N)`` pixels of each clip (all frames pooled).
        mean: ``(B, C)`` target means.
        cov_root: ``(B, C, C)`` symmetric square roots of the target covariances.
        eps: floor of the clip covariance's eigenvalues, so flat clips are not blown up.
    """
    mu = x.mean(2, keepdim=True)
    xc = x - mu
    cov = xc @ xc.transpose(1, 2) / x.shape[2]
    evals, evecs = torch.linalg.eigh(cov.double())
    inv_root = evecs @ torch.diag_embed(evals.clamp_min(eps).rsqrt()) @ evecs.transpose(1, 2)
    return cov_root @ (inv_root.to(x.dtype) @ xc) + mean.unsqueeze(2)


def match_histograms(
    x: torch.Tensor,
    target_quantiles: torch.Tensor,
    sample: torch.Tensor | None = None,
    lut_size: int = 1024,
) -> torch.Tensor:
    """Per-channel histogram matching: a monotone lookup from the clip's quantiles to a target's.

    The lookup is tabulated on ``lut_size`` points between the clip's minimum and maximum and
    applied by linear interpolation, so its cost is linear in the number of pixels.

    Args:
        x: ``(B, C, N)`` pixels of each clip (all frames pooled, so one lookup serves every frame).
        target_quantiles: ``(B, C, K)`` increasing target values at quantiles ``linspace(0, 1, K)``.
        sample: ``(B, C, M)`` pixels the clip's quantiles are estimated from (default ``x``).
        lut_size: number of table points.
    """
    b, c, n = x.shape
    k = target_quantiles.shape[2]
    sample = x if sample is None else sample
    ordered = sample.reshape(b * c, -1).sort(dim=1).values
    positions = torch.linspace(0, ordered.shape[1] - 1, k, device=x.device).round().long()
    source = ordered[:, positions].contiguous()
    target = target_quantiles.reshape(b * c, k)
    low, high = ordered[:, :1], ordered[:, -1:]
    span = (high - low).clamp_min(1e-12)
    grid = low + span * torch.linspace(0, 1, lut_size, device=x.device, dtype=x.dtype)
    # a run of equal values (a flat region) maps to the middle of its target range
    lut = 0.5 * (_interp(grid, source, target, False) + _interp(grid, source, target, True))
    flat = x.reshape(b * c, n)
    pos = ((flat - low) / span * (lut_size - 1)).clamp(0, lut_size - 1)
    i0 = pos.floor().long().clamp(max=lut_size - 2)
    weight = pos - i0
    out = lut.gather(1, i0) * (1 - weight) + lut.gather(1, i0 + 1) * weight
    return out.reshape(b, c, n)


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor, right: bool) -> torch.Tensor:
    k = xp.shape[1]
    idx = torch.searchsorted(xp, x.contiguous(), right=right).clamp(1, k - 1)
    x0, x1 = xp.gather(1, idx - 1), xp.gather(1, idx)
    f0, f1 = fp.gather(1, idx - 1), fp.gather(1, idx)
    weight = ((x - x0) / (x1 - x0).clamp_min(1e-12)).clamp(0, 1)
    return f0 + weight * (f1 - f0)
