"""Clip sampling: which frames (temporal) and which pixels (spatial) make a clip."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from stbias.errors import StbiasError

TEMPORAL_MODES = ("uniform", "random", "centre")
CROP_MODES = ("centre", "random")


def check_mode(value: str, valid: tuple[str, ...], what: str) -> str:
    """Return ``value`` normalised (``center`` -> ``centre``) or raise naming the valid choices."""
    value = "centre" if value == "center" else value
    if value not in valid:
        raise StbiasError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")
    return value


def temporal_indices(
    n: int,
    num_frames: int,
    sampling_rate: int = 1,
    mode: str = "centre",
    rng: np.random.Generator | None = None,
    view: int = 0,
    num_views: int = 1,
) -> np.ndarray:
    """Frame indices ``(num_frames,)`` into a video of ``n`` frames.

    A clip spans ``(num_frames - 1) * sampling_rate + 1`` frames. ``centre`` puts that span in the
    middle of the video, ``random`` starts it anywhere (``rng``), and ``uniform`` ignores
    ``sampling_rate`` and spreads the frames evenly over the whole video (segment-style sampling).
    With ``num_views > 1`` view ``view`` of ``num_views`` takes its start from evenly spaced
    positions (``centre`` and ``random`` alike: test-time multi-view). A video shorter than the span
    is looped: indices wrap around modulo ``n``.
    """
    if n <= 0:
        raise StbiasError(f"a video needs at least one frame, got {n}")
    if num_frames < 1 or sampling_rate < 1:
        raise StbiasError(
            f"num_frames and sampling_rate must be >= 1, got {num_frames} and {sampling_rate}"
        )
    mode = check_mode(mode, TEMPORAL_MODES, "temporal sampling")
    if mode == "uniform":
        if num_views > 1:
            # segment-style views: shift the evenly spread frames by a fraction of a segment
            seg = n / num_frames
            idx = np.floor(np.arange(num_frames) * seg + seg * (view + 0.5) / num_views)
        else:
            idx = np.floor((np.arange(num_frames) + 0.5) * n / num_frames)
        return np.minimum(idx.astype(np.int64), n - 1)
    span = (num_frames - 1) * sampling_rate + 1
    room = max(n - span, 0)
    if num_views > 1:
        start = int(np.floor(room * view / (num_views - 1) + 0.5))
    elif mode == "centre":
        start = room // 2
    else:
        rng = rng if rng is not None else np.random.default_rng()
        start = int(rng.integers(0, room + 1))
    return (start + np.arange(num_frames) * sampling_rate) % n


def resize_short_side(
    frames: np.ndarray, size: int, interpolation: int = cv2.INTER_AREA
) -> np.ndarray:
    """Resize ``(T, H, W, C)`` or ``(T, H, W)`` frames so that the shorter side is ``size``."""
    h, w = frames.shape[1:3]
    if min(h, w) == size:
        return frames
    if h <= w:
        new_h, new_w = size, max(int(round(w * size / h)), size)
    else:
        new_h, new_w = max(int(round(h * size / w)), size), size
    if interpolation == cv2.INTER_AREA and size > min(h, w):
        interpolation = cv2.INTER_LINEAR
    out = [cv2.resize(f, (new_w, new_h), interpolation=interpolation) for f in frames]
    out = np.stack(out)
    return out.reshape(out.shape[:3] + frames.shape[3:])


def crop_box(
    h: int, w: int, size: int, mode: str = "centre", rng: np.random.Generator | None = None
) -> tuple[int, int]:
    """Top-left corner ``(y, x)`` of a ``size`` x ``size`` crop of an ``h`` x ``w`` frame."""
    mode = check_mode(mode, CROP_MODES, "crop")
    if h < size or w < size:
        raise StbiasError(f"cannot crop {size}x{size} from a {h}x{w} frame")
    if mode == "centre":
        return (h - size) // 2, (w - size) // 2
    rng = rng if rng is not None else np.random.default_rng()
    return int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))


def check_float_clip(clip01: object, what: str, channels: tuple[int, ...] = (1, 3)) -> None:
    """Raise a StbiasError naming ``what`` unless ``clip01`` is a float ``(B, C, T, H, W)``
    tensor (values in [0, 1]) with ``C`` in ``channels``."""
    if not torch.is_tensor(clip01) or clip01.ndim != 5:
        shape = tuple(clip01.shape) if torch.is_tensor(clip01) else type(clip01).__name__
        raise StbiasError(f"{what} takes a float tensor (B, C, T, H, W) in [0, 1]; got {shape}")
    if not clip01.is_floating_point():
        raise StbiasError(
            f"{what} takes float clips in [0, 1], got dtype {clip01.dtype}; "
            "convert uint8 batches with stbias.data.video_to_float"
        )
    if channels and clip01.shape[1] not in channels:
        valid = " or ".join(map(str, channels))
        raise StbiasError(
            f"{what} takes (B, C, T, H, W) with C = {valid}; got shape {tuple(clip01.shape)}"
        )
