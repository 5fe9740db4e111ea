"""Optical flow from decoded frames, rendered as an image (hue = direction, saturation =
magnitude): the flow input of two-stream models, a data-side transform like frame shuffling."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from stbias.data.clips import check_float_clip
from stbias.errors import StbiasError

# ITU-R BT.601 luma weights of R, G, B (grey images, saturation blends, flow on luma)
LUMA = (0.299, 0.587, 0.114)

FARNEBACK = {
    "pyr_scale": 0.5,
    "levels": 3,
    "winsize": 9,
    "iterations": 3,
    "poly_n": 5,
    "poly_sigma": 1.1,
    "flags": 0,
}


def _gray_uint8(frames: torch.Tensor) -> np.ndarray:
    """``(C, T, H, W)`` float in [0, 1] -> ``(T, H, W)`` uint8 luma."""
    if frames.shape[0] == 3:
        frames = (frames * frames.new_tensor(LUMA).view(3, 1, 1, 1)).sum(0)
    else:
        frames = frames[0]
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def farneback_flow(clip01: torch.Tensor, **params: Any) -> torch.Tensor:
    """Forward optical flow between consecutive frames (OpenCV Farneback, on the CPU).

    Args:
        clip01: float ``(B, C, T, H, W)`` in [0, 1].
        **params: overrides of ``FARNEBACK`` (``cv2.calcOpticalFlowFarneback`` arguments).

    Returns:
        ``(B, 2, T - 1, H, W)`` flow (x, y) in pixels, from frame ``t`` to ``t + 1``, on the
        input's device.
    """
    import cv2

    check_float_clip(clip01, "optical flow")
    unknown = set(params) - set(FARNEBACK)
    if unknown:
        raise StbiasError(
            f"unknown Farneback parameter(s) {sorted(unknown)}; valid: {', '.join(FARNEBACK)}"
        )
    opts = {**FARNEBACK, **params}
    if clip01.shape[2] < 2:
        raise StbiasError(f"optical flow needs T >= 2 frames; got T = {clip01.shape[2]}")
    out = []
    for clip in clip01:
        gray = _gray_uint8(clip)
        flows = [
            cv2.calcOpticalFlowFarneback(gray[t], gray[t + 1], None, **opts)
            for t in range(len(gray) - 1)
        ]
        out.append(np.stack(flows).transpose(3, 0, 1, 2))
    return torch.from_numpy(np.stack(out)).to(clip01.device)


def flow_to_hue_saturation(
    flow: torch.Tensor, max_magnitude: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hue (direction / 2 pi, in [0, 1)) and saturation (magnitude, scaled to [0, 1]).

    Args:
        flow: ``(B, 2, T, H, W)``.
        max_magnitude: the magnitude shown at full saturation; by default each clip's largest
            magnitude over all its frames, so one scale serves the whole clip.

    Returns:
        hue and saturation, each ``(B, 1, T, H, W)``.
    """
    magnitude = flow.norm(dim=1, keepdim=True)
    angle = torch.atan2(flow[:, 1:2], flow[:, 0:1])
    hue = torch.remainder(angle / (2 * math.pi), 1.0)
    if max_magnitude is None:
        scale = magnitude.amax(dim=(1, 2, 3, 4), keepdim=True).clamp_min(1e-6)
    else:
        scale = torch.as_tensor(float(max_magnitude), device=flow.device)
    return hue, (magnitude / scale).clamp(0, 1)


def hsv_to_rgb(hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """HSV (each ``(B, 1, ...)``, hue in [0, 1)) -> RGB ``(B, 3, ...)`` in [0, 1]."""
    k = torch.tensor([5.0, 3.0, 1.0], device=hue.device).view(1, 3, *([1] * (hue.dim() - 2)))
    k = torch.remainder(k + hue * 6.0, 6.0)
    return value - value * saturation * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)


def flow_to_image(flow: torch.Tensor, max_magnitude: float | None = None) -> torch.Tensor:
    """Render flow ``(B, 2, T, H, W)`` as an RGB image ``(B, 3, T, H, W)`` (hue = direction)."""
    hue, sat = flow_to_hue_saturation(flow, max_magnitude)
    return hsv_to_rgb(hue, sat, torch.ones_like(hue))


def rgb_to_hsv(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RGB ``(B, 3, ...)`` in [0, 1] -> hue (turns, in [0, 1)), saturation and value, each
    ``(B, 1, ...)`` (the inverse of :func:`hsv_to_rgb`)."""
    r, g, b = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
    value, argmax = rgb.max(dim=1, keepdim=True)
    chroma = value - rgb.min(dim=1, keepdim=True).values
    safe = chroma.clamp_min(1e-12)
    hue = torch.where(
        argmax == 0,
        torch.remainder((g - b) / safe, 6.0),
        torch.where(argmax == 1, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
    )
    hue = torch.where(chroma > 0, hue / 6.0, torch.zeros_like(hue))
    saturation = torch.where(value > 0, chroma / value.clamp_min(1e-12), torch.zeros_like(value))
    return torch.remainder(hue, 1.0), saturation, value


def two_stream_input(clip01: torch.Tensor) -> list[torch.Tensor]:
    """A clip as a two-stream model's input: ``[rgb, flow image]``, before normalisation.

    Args:
        clip01: float ``(B, C, T, H, W)`` in [0, 1] (1-channel clips become grey RGB).

    Returns:
        RGB frames ``0 .. T - 2`` ``(B, 3, T - 1, H, W)`` and the forward flow from each to the
        next rendered as an image (Farneback; hue = direction, saturation = magnitude), both in
        [0, 1]; the model's packing (``stbias.models.inputs.pack_inputs``) normalises them.
    """
    check_float_clip(clip01, "two_stream_input", channels=(1, 3))
    rgb = clip01.expand(-1, 3, -1, -1, -1) if clip01.shape[1] == 1 else clip01
    flow = flow_to_image(farneback_flow(rgb))
    return [rgb[:, :, :-1], flow.to(rgb.dtype)]
