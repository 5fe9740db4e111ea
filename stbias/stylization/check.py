"""The stylizer acceptance check (docs/stylization.md) on a synthetic clip with known motion.

Two styles of one clip must give the same optical flow (end-point error small against the flow
magnitude) while each frame's appearance changes (mean absolute difference and colour-histogram
distance well above zero).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from stbias.data.flow import farneback_flow
from stbias.stylization.base import Stylizer
from stbias.stylization.images import load_style_image


def moving_square_clip(
    frames: int = 8,
    size: int = 64,
    channels: int = 3,
    background_velocity: tuple[int, int] = (1, 0),
    square_velocity: tuple[int, int] = (-2, 1),
    square: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A photo panning at one velocity with a textured square moving at another.

    The background is a region of the ``astronaut`` photograph, the square a region of
    ``coffee``; velocities are integer ``(dx, dy)`` pixels per frame, so every frame is an exact
    shift and the true flow is known.

    Returns:
        the clip ``(1, C, T, H, W)`` in [0, 1] and its true forward flow ``(1, 2, T - 1, H, W)``
        (x, y) in pixels.
    """
    square = square or size * 3 // 8
    bx, by = background_velocity
    sx, sy = square_velocity
    margin = (frames - 1) * max(abs(bx), abs(by))
    canvas = F.interpolate(
        load_style_image("astronaut")[None], size=(size + margin,) * 2, mode="area"
    )[0]
    patch = F.interpolate(load_style_image("coffee")[None, :, 100:, 60:], size=(square,) * 2)[0]
    clip = torch.empty(3, frames, size, size)
    flow = torch.empty(2, frames - 1, size, size)
    # the window moves against the content so that the content moves by (bx, by)
    x0 = margin if bx > 0 else 0
    y0 = margin if by > 0 else 0
    px = (size - square) // 2 - sx * (frames - 1) // 2
    py = (size - square) // 2 - sy * (frames - 1) // 2
    for t in range(frames):
        wx, wy = x0 - bx * t, y0 - by * t
        clip[:, t] = canvas[:, wy : wy + size, wx : wx + size]
        qx, qy = px + sx * t, py + sy * t
        clip[:, t, qy : qy + square, qx : qx + square] = patch
        if t < frames - 1:
            flow[0, t], flow[1, t] = bx, by
            flow[0, t, qy : qy + square, qx : qx + square] = sx
            flow[1, t, qy : qy + square, qx : qx + square] = sy
    if channels == 1:
        clip = (clip * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1, 1)).sum(0, keepdim=True)
    return clip[None], flow[None]


def end_point_error(flow_a: torch.Tensor, flow_b: torch.Tensor, margin: int = 6) -> float:
    """Mean end-point error between two flows ``(B, 2, T, H, W)``, ignoring a border margin."""
    diff = (flow_a - flow_b)[
        ..., margin : flow_a.shape[-2] - margin, margin : flow_a.shape[-1] - margin
    ]
    return float(diff.norm(dim=1).mean())


def histogram_distance(a: torch.Tensor, b: torch.Tensor, bins: int = 32) -> float:
    """Total-variation distance (in [0, 1]) of per-frame, per-channel intensity histograms.

    Averaged over clips, channels and frames of ``(B, C, T, H, W)`` tensors in [0, 1].
    """
    dists = []
    for x, y in zip(a.flatten(0, 2), b.flatten(0, 2)):
        hx = torch.histc(x.float(), bins=bins, min=0, max=1)
        hy = torch.histc(y.float(), bins=bins, min=0, max=1)
        dists.append(0.5 * (hx / hx.sum() - hy / hy.sum()).abs().sum())
    return float(torch.stack(dists).mean())


def acceptance_table(
    stylizer: Stylizer,
    clip01: torch.Tensor,
    true_flow: torch.Tensor,
    styles: Sequence[int | str] | None = None,
) -> dict[str, dict[str, float]]:
    """Per style: flow agreement with the other styles and appearance change.

    Keys per style: ``flow_rel_epe`` (mean over the other styles of the end-point error between
    the two styled clips' flows, divided by the mean true flow magnitude; max in
    ``flow_rel_epe_max``), ``flow_rel_epe_original`` (same against the unstyled clip's flow),
    ``flow_rel_epe_true`` (against the true flow), ``mad`` / ``hist`` (mean absolute pixel
    difference / histogram distance to the other styles, mean over them; min in ``mad_min`` /
    ``hist_min``) and ``mad_original`` / ``hist_original`` (against the unstyled clip). The
    entry ``original`` holds the Farneback error of the unstyled clip against the true flow.
    """
    styles = list(styles) if styles is not None else list(range(stylizer.num_styles))
    margin = 6
    scale = float(true_flow[..., margin:-margin, margin:-margin].norm(dim=1).mean())
    styled = {s: stylizer(clip01, s) for s in styles}
    flows = {s: farneback_flow(v) for s, v in styled.items()}
    flow0 = farneback_flow(clip01)
    table = {"original": {"flow_rel_epe_true": end_point_error(flow0, true_flow) / scale}}
    for s in styles:
        others = [o for o in styles if o != s]
        epes = [end_point_error(flows[s], flows[o]) / scale for o in others]
        mads = [float((styled[s] - styled[o]).abs().mean()) for o in others]
        hists = [histogram_distance(styled[s], styled[o]) for o in others]
        name = stylizer.styles[stylizer.style_index(s)]
        table[name] = {
            "flow_rel_epe": sum(epes) / max(1, len(epes)),
            "flow_rel_epe_max": max(epes, default=0.0),
            "flow_rel_epe_original": end_point_error(flows[s], flow0) / scale,
            "flow_rel_epe_true": end_point_error(flows[s], true_flow) / scale,
            "mad": sum(mads) / max(1, len(mads)),
            "mad_min": min(mads, default=0.0),
            "hist": sum(hists) / max(1, len(hists)),
            "hist_min": min(hists, default=0.0),
            "mad_original": float((styled[s] - clip01).abs().mean()),
            "hist_original": histogram_distance(styled[s], clip01),
        }
    return table
