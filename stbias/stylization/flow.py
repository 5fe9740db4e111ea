"""Optical flow as an HSV image and the RGB + flow pairs of two-stream models (docs/stylization.md).

Flow is computed on the original (unstylized) frames and rendered with hue = direction and
saturation = magnitude (value = 1), or read from precomputed flow images (any rendering whose hue
encodes direction and saturation magnitude). The static pair keeps the stylized RGB frames and
jitters the flow image's colours; the dynamic pair keeps the flow image and changes the RGB style.

Two definitions of the jitter (:data:`FLOW_JITTERS`, docs/segmentation.md):

* ``reference`` (the default) — the authors' ``ExtFlowColorJitter`` (Kowal et al., VOS code): per
  frame, ranges ``H ~ U(0.1, 0.5)`` and ``S ~ U(0.1, 1)``, then a torchvision-style
  ``ColorJitter(saturation=S, hue=H)``: a saturation factor ``f ~ U(max(0, 1 − S), 1 + S)``
  blending the image with its grey version (``clamp(f x + (1 − f) grey(x), 0, 1)``) and a hue
  rotation ``h ~ U(−H, H)`` turns, in random order.
* ``per_clip`` — stbias's earlier jitter: one draw per clip, hue shifted by ``±U(0.1, 0.5)`` turns
  and HSV saturation multiplied or divided by ``U(1.25, 2)``; a larger change of the flow image.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from stbias.data.flow import LUMA, farneback_flow, flow_to_image, hsv_to_rgb, rgb_to_hsv
from stbias.errors import StbiasError
from stbias.stylization.base import Stylizer
from stbias.stylization.draws import clip_generator, clip_indices, draw_styles

FLOW_JITTERS = ("reference", "per_clip")
# the ranges of each definition (the authors' for reference; stbias's earlier ones for per_clip)
FLOW_JITTER_DEFAULTS: dict[str, dict[str, tuple[float, float]]] = {
    "reference": {"hue_range": (0.1, 0.5), "saturation_range": (0.1, 1.0)},
    "per_clip": {"hue_shift": (0.1, 0.5), "saturation_scale": (1.25, 2.0)},
}


def _signed_uniform(generator: torch.Generator, low: float, high: float) -> float:
    value = low + (high - low) * float(torch.rand(1, generator=generator))
    return value if float(torch.rand(1, generator=generator)) < 0.5 else -value


def _pair(settings: Mapping[str, Any], key: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in settings[key])
    except (TypeError, ValueError):
        raise StbiasError(
            f"flow jitter {key}={settings[key]!r}; give two numbers [low, high]"
        ) from None
    return low, high


def check_flow_jitter(kind: str, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ranges of flow jitter ``kind`` (defaults updated by ``settings``), checked."""
    if kind not in FLOW_JITTERS:
        raise StbiasError(f"unknown flow jitter {kind!r}; valid: {', '.join(FLOW_JITTERS)}")
    out: dict[str, Any] = dict(FLOW_JITTER_DEFAULTS[kind])
    unknown = set(settings or {}) - set(out)
    if unknown:
        raise StbiasError(
            f"unknown setting(s) {sorted(unknown)} of flow jitter {kind!r}; valid: {', '.join(out)}"
        )
    out.update(settings or {})
    out = {key: _pair(out, key) for key in out}
    if kind == "reference":
        low, high = out["hue_range"]
        if not 0 <= low <= high <= 0.5:
            raise StbiasError(f"hue_range must satisfy 0 <= low <= high <= 0.5; got {[low, high]}")
        low, high = out["saturation_range"]
        if not 0 <= low <= high:
            raise StbiasError(f"saturation_range must satisfy 0 <= low <= high; got {[low, high]}")
    else:
        low, high = out["hue_shift"]
        if not 0 < low <= high <= 0.5:
            raise StbiasError(f"hue_shift must satisfy 0 < low <= high <= 0.5; got {[low, high]}")
        low, high = out["saturation_scale"]
        if not 1 < low <= high:
            raise StbiasError(f"saturation_scale must satisfy 1 < low <= high; got {[low, high]}")
    return out


def adjust_saturation(rgb: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """``clamp(f x + (1 − f) grey(x), 0, 1)`` of RGB ``(B, 3, ...)`` in [0, 1] (torchvision's
    ``adjust_saturation``: 0 gives the grey image, 1 the image, above 1 more saturated)."""
    grey = (rgb * rgb.new_tensor(LUMA).view(1, 3, *([1] * (rgb.dim() - 2)))).sum(1, True)
    return (factor * rgb + (1 - factor) * grey).clamp(0, 1)


def adjust_hue(rgb: torch.Tensor, shift: torch.Tensor | float) -> torch.Tensor:
    """RGB ``(B, 3, ...)`` with its HSV hue rotated by ``shift`` turns (torchvision's
    ``adjust_hue``)."""
    hue, sat, value = rgb_to_hsv(rgb)
    return hsv_to_rgb(torch.remainder(hue + shift, 1.0), sat, value)


def draw_reference_jitter(
    generator: torch.Generator,
    frames: int,
    hue_range: Sequence[float] = (0.1, 0.5),
    saturation_range: Sequence[float] = (0.1, 1.0),
) -> torch.Tensor:
    """The authors' per-frame jitter draws: ``(frames, 3)`` hue shift, saturation factor and
    order (1: saturation first, 0: hue first).

    Per frame ``H ~ U(hue_range)``, ``S ~ U(saturation_range)``, then ``h ~ U(−H, H)``,
    ``f ~ U(max(0, 1 − S), 1 + S)`` and either order with probability 1/2 (as torchvision's
    ``ColorJitter`` with brightness and contrast off).
    """
    u = torch.rand(frames, 5, generator=generator, dtype=torch.float64)
    h_range = hue_range[0] + (hue_range[1] - hue_range[0]) * u[:, 0]
    s_range = saturation_range[0] + (saturation_range[1] - saturation_range[0]) * u[:, 1]
    shift = h_range * (2 * u[:, 2] - 1)
    low = (1 - s_range).clamp_min(0)
    factor = low + (1 + s_range - low) * u[:, 3]
    first = (u[:, 4] < 0.5).to(torch.float64)
    return torch.stack([shift, factor, first], 1)


def reference_flow_jitter(rgb: torch.Tensor, jitter: torch.Tensor) -> torch.Tensor:
    """Flow images ``(B, 3, T, H, W)`` jittered per frame by ``jitter`` ``(B, T, 3)``
    (:func:`draw_reference_jitter`: hue shift, saturation factor, saturation first)."""
    shape = (rgb.shape[0], 1, rgb.shape[2], 1, 1)
    shift, factor, first = (jitter[..., k].to(rgb).view(shape) for k in range(3))
    saturation_first = adjust_hue(adjust_saturation(rgb, factor), shift)
    hue_first = adjust_saturation(adjust_hue(rgb, shift), factor)
    return torch.where(first > 0.5, saturation_first, hue_first)


def make_flow_pair_views(
    clip01: torch.Tensor,
    stylizer: Stylizer,
    index: int | Sequence[int] | torch.Tensor,
    seed: int = 0,
    *,
    flow: torch.Tensor | None = None,
    flow_image: torch.Tensor | None = None,
    flow_jitter: str = "reference",
    jitter_settings: Mapping[str, Any] | None = None,
    balanced: bool = True,
    **context: Any,
) -> dict[str, Any]:
    """Views of the static and dynamic pairs of two-stream (RGB + flow) models.

    Frame ``t`` of every view pairs RGB frame ``t`` with the flow from ``t`` to ``t + 1``.

    Args:
        clip01: float ``(B, C, T, H, W)`` in [0, 1], the original clips.
        stylizer: renders the RGB frames.
        index: the dataset index of each clip (an int ``i`` means ``i, i + 1, ...``).
        seed: with the index, seeds the styles and jitters of a clip.
        flow: ``(B, 2, T - 1, H, W)`` precomputed flow; Farneback on ``clip01`` when ``None``.
        flow_image: ``(B, 3, T - 1, H, W)`` precomputed flow images in [0, 1] (hue = direction,
            saturation = magnitude), used instead of ``flow``.
        flow_jitter: ``reference`` (the authors' per-frame ``ExtFlowColorJitter``, the default)
            or ``per_clip`` (one HSV jitter per clip); see the module docstring.
        jitter_settings: the ranges of that jitter (:data:`FLOW_JITTER_DEFAULTS` by default):
            ``hue_range`` and ``saturation_range`` (reference), ``hue_shift`` (``±U(low, high)``
            turns) and ``saturation_scale`` (times or divided by ``U(low, high)``) (per_clip).
        balanced: as in ``make_pair_views``.
        **context: passed to the stylizer.

    Returns:
        ``anchor``, ``static``, ``dynamic``: each ``[rgb (B, C, T - 1, H, W), flow image
        (B, 3, T - 1, H, W)]``; ``pairs``, ``factor``, ``styles`` as in ``make_pair_views``;
        ``jitter``: ``(B, T - 1, 3)`` per frame the static view's hue shift (turns), saturation
        factor and order (1: saturation first; ``per_clip`` repeats one draw over the frames
        and its HSV scaling commutes with the hue shift: 0).
    """
    ranges = check_flow_jitter(flow_jitter, jitter_settings)
    batch, frames = clip01.shape[0], clip01.shape[2] - 1
    generators = [clip_generator(seed, i) for i in clip_indices(index, batch)]
    styles = torch.tensor([draw_styles(stylizer.num_styles, g) for g in generators])
    coins = torch.tensor([bool(torch.rand(1, generator=g) < 0.5) for g in generators])
    if flow_jitter == "reference":
        draws = [draw_reference_jitter(g, frames, **ranges) for g in generators]
        jitter = torch.stack(draws).to(clip01.device, clip01.dtype)
    else:
        (low, high), (s_low, s_high) = ranges["hue_shift"], ranges["saturation_scale"]
        rows = []
        for g in generators:
            shift = _signed_uniform(g, low, high)
            factor = math.exp(_signed_uniform(g, math.log(s_low), math.log(s_high)))
            rows.append((shift, factor, 0.0))
        jitter = torch.tensor(rows, dtype=clip01.dtype, device=clip01.device)
        jitter = jitter[:, None].expand(batch, frames, 3).contiguous()
    if flow is not None and flow_image is not None:
        raise StbiasError("give flow (vectors) or flow_image (rendered), not both")
    if flow_image is not None:
        expected = (batch, 3, frames, *clip01.shape[3:])
        if tuple(flow_image.shape) != expected:
            raise StbiasError(f"flow image of shape {tuple(flow_image.shape)}; expected {expected}")
        flow_image = flow_image.to(clip01.device, clip01.dtype)
    else:
        if flow is None:
            flow = farneback_flow(clip01)
        expected = (batch, 2, frames, *clip01.shape[3:])
        if tuple(flow.shape) != expected:
            raise StbiasError(f"flow of shape {tuple(flow.shape)}; expected {expected}")
        flow_image = flow_to_image(flow.to(clip01.device, clip01.dtype))
    if flow_jitter == "reference":
        jittered = reference_flow_jitter(flow_image, jitter)
    else:
        hue, sat, value = rgb_to_hsv(flow_image)
        shape = (batch, 1, frames, 1, 1)
        jittered = hsv_to_rgb(
            torch.remainder(hue + jitter[..., 0].view(shape), 1.0),
            (sat * jitter[..., 1].view(shape)).clamp(0, 1),
            value,
        )
    rgb_a = stylizer(clip01, styles[:, 0], **context)[:, :, :-1]
    rgb_b = stylizer(clip01, styles[:, 1], **context)[:, :, :-1]
    if balanced:
        factor = {"static": torch.ones(batch, dtype=torch.bool), "dynamic": torch.ones_like(coins)}
    else:
        factor = {"static": coins, "dynamic": ~coins}
    return {
        "anchor": [rgb_a, flow_image],
        "static": [rgb_a, jittered],
        "dynamic": [rgb_b, flow_image],
        "pairs": {"static": ("anchor", "static"), "dynamic": ("anchor", "dynamic")},
        "factor": factor,
        "styles": styles,
        "jitter": jitter,
    }
