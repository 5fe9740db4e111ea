"""Tiny video networks (well under 2 M parameters) for tests and the quickstart on a CPU.

* ``i3d_tiny``: a stem and three residual stages of 3x3x3 convolutions: it mixes frames from the
  first layer on, so it can see motion.
* ``c2d_tiny``: the same network with every kernel and stride ``(1, k, k)``: frames are processed
  independently until the final average pooling, so its pooled features do not depend on frame
  order at all (a known answer for the static/dynamic measures).
* ``slowfast_tiny``: a slow pathway (few frames, wide, temporal kernels only in its last stage)
  and a fast pathway (``alpha`` times more frames, narrow, temporal kernels everywhere), with a
  lateral fast-to-slow fusion after the stem and after every stage but the last, as in SlowFast.

Module paths that layer aliases point at: ``stages.0`` ... ``stages.2`` and ``head.pool`` for the
single-pathway nets; ``slow.stages.i``, ``fast.stages.i`` (each pathway before fusion),
``fusions.i`` (the slow pathway after fusion i; ``fusions.0`` follows the stems) and ``head.pool``
(both pathways pooled and concatenated) for ``slowfast_tiny``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from stbias.errors import StbiasError
from stbias.models.checks import check_classifier_args

Triple = tuple[int, int, int]


def _padding(kernel: Triple) -> Triple:
    return tuple(k // 2 for k in kernel)  # type: ignore[return-value]


def conv_bn_relu(
    in_channels: int, out_channels: int, kernel: Triple, stride: Triple
) -> nn.Sequential:
    """``Conv3d`` (no bias, ``same``-style padding), ``BatchNorm3d`` and ``ReLU``."""
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, kernel, stride, _padding(kernel), bias=False),
        nn.BatchNorm3d(out_channels),
        nn.ReLU(),
    )


class ResBlock(nn.Module):
    """Two convolutions with a residual connection (1x1x1 projection when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: Triple, stride: Triple) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(
            in_channels, out_channels, kernel, stride, _padding(kernel), bias=False
        )
        self.bn1 = nn.BatchNorm3d(out_channels)
        self.conv2 = nn.Conv3d(out_channels, out_channels, kernel, 1, _padding(kernel), bias=False)
        self.bn2 = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels or tuple(stride) != (1, 1, 1):
            self.shortcut = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm3d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, T, H, W)`` -> ``(B, C_out, T', H', W')``."""
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class Head(nn.Module):
    """Global average pooling (``pool``), dropout and a linear classifier (``proj``)."""

    def __init__(self, in_features: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> logits ``(B, num_classes)``."""
        return self.proj(self.dropout(self.pool(x).flatten(1)))


class TinyVideoNet(nn.Module):
    """Stem (``stem``), residual stages (``stages.i``) and head (``head``): ``(B, C, T, H, W)``
    -> logits ``(B, num_classes)``.

    Args:
        num_classes: Number of output classes.
        in_channels: Input channels.
        widths: Channels of the stem, then of every stage.
        temporal_kernel: Temporal extent of every kernel; 1 makes the network frame-wise.
        temporal_strides: Temporal stride of every stage (1 where ``temporal_kernel`` is 1, or
            frames would be dropped).
        dropout: Drop probability before the classifier.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        widths: Sequence[int],
        temporal_kernel: int,
        temporal_strides: Sequence[int],
        dropout: float,
    ) -> None:
        super().__init__()
        kt = temporal_kernel
        self.stem = nn.Sequential(
            conv_bn_relu(in_channels, widths[0], (kt, 5, 5), (1, 2, 2)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
        )
        stages = []
        for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:])):
            spatial = 1 if i == 0 else 2
            stages.append(ResBlock(cin, cout, (kt, 3, 3), (temporal_strides[i], spatial, spatial)))
        self.stages = nn.ModuleList(stages)
        self.num_features = widths[-1]
        self.head = Head(widths[-1], num_classes, dropout)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> last stage output ``(B, C', T', H', W')``."""
        if x.ndim != 5:
            raise StbiasError(f"expected a (B, C, T, H, W) tensor; got shape {tuple(x.shape)}")
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> logits ``(B, num_classes)``."""
        return self.head(self.forward_features(x))


_WIDTHS = (16, 32, 64, 128)


def i3d_tiny(*, num_classes: int = 10, in_channels: int = 3, dropout: float = 0.0) -> TinyVideoNet:
    """Tiny 3D CNN: every kernel spans 3 frames; stages 2 and 3 halve time (about 0.9 M params)."""
    check_classifier_args("i3d_tiny", num_classes, in_channels, dropout)
    return TinyVideoNet(
        num_classes=num_classes,
        in_channels=in_channels,
        widths=_WIDTHS,
        temporal_kernel=3,
        temporal_strides=(1, 2, 2),
        dropout=dropout,
    )


def c2d_tiny(*, num_classes: int = 10, in_channels: int = 3, dropout: float = 0.0) -> TinyVideoNet:
    """Tiny frame-wise CNN: ``i3d_tiny`` with ``(1, k, k)`` kernels and no temporal stride."""
    check_classifier_args("c2d_tiny", num_classes, in_channels, dropout)
    return TinyVideoNet(
        num_classes=num_classes,
        in_channels=in_channels,
        widths=_WIDTHS,
        temporal_kernel=1,
        temporal_strides=(1, 1, 1),
        dropout=dropout,
    )


class FastToSlow(nn.Module):
    """Lateral connection: a strided temporal convolution of the fast pathway, concatenated to the
    slow pathway. ``forward(slow, fast)`` returns the fused slow tensor."""

    def __init__(self, fast_channels: int, alpha: int, kernel: int = 5) -> None:
        super().__init__()
        self.alpha = alpha
        self.conv = conv_bn_relu(fast_channels, 2 * fast_channels, (kernel, 1, 1), (alpha, 1, 1))

    def forward(self, slow: torch.Tensor, fast: torch.Tensor) -> torch.Tensor:
        """``(B, Cs, Ts, H, W)``, ``(B, Cf, Tf, H, W)`` -> ``(B, Cs + 2 Cf, Ts, H, W)``."""
        lateral = self.conv(fast)
        if lateral.shape[2:] != slow.shape[2:]:
            raise StbiasError(
                f"slowfast pathways do not line up: slow (T, H, W) = {tuple(slow.shape[2:])}, "
                f"fast {tuple(fast.shape[2:])} with alpha={self.alpha}; the slow input must have "
                f"ceil(T_fast / alpha) frames and the same height and width as the fast input"
            )
        return torch.cat([slow, lateral], dim=1)


class PathwayPool(nn.Module):
    """Global average pooling of each pathway, concatenated: ``[(B, Cs, ...), (B, Cf, ...)]`` ->
    ``(B, Cs + Cf)``."""

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Pool every pathway over ``(T, H, W)`` and concatenate the channels."""
        return torch.cat([x.mean(dim=(2, 3, 4)) for x in xs], dim=1)


class SlowFastHead(nn.Module):
    """``pool`` (both pathways, concatenated), dropout and ``proj``."""

    def __init__(self, in_features: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.pool = PathwayPool()
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(in_features, num_classes)

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        """``[slow, fast]`` -> logits ``(B, num_classes)``."""
        return self.proj(self.dropout(self.pool(xs)))


class TinySlowFast(nn.Module):
    """Two-pathway network; ``forward([slow, fast])`` -> logits ``(B, num_classes)``.

    ``slow`` is ``(B, C, T / alpha, H, W)`` and ``fast`` is ``(B, C, T, H, W)`` (the fast frames
    subsampled by ``alpha`` give the slow ones).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        alpha: int,
        slow_widths: Sequence[int],
        fast_widths: Sequence[int],
        slow_temporal_kernels: Sequence[int],
        dropout: float,
    ) -> None:
        super().__init__()
        self.alpha = alpha
        self.slow = nn.ModuleDict(
            {
                "stem": nn.Sequential(
                    conv_bn_relu(in_channels, slow_widths[0], (1, 5, 5), (1, 2, 2)),
                    nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
                ),
                "stages": nn.ModuleList(),
            }
        )
        self.fast = nn.ModuleDict(
            {
                "stem": nn.Sequential(
                    conv_bn_relu(in_channels, fast_widths[0], (5, 5, 5), (1, 2, 2)),
                    nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
                ),
                "stages": nn.ModuleList(),
            }
        )
        self.fusions = nn.ModuleList()
        n_stages = len(slow_widths) - 1
        for i in range(n_stages):
            self.fusions.append(FastToSlow(fast_widths[i], alpha))
            spatial = 1 if i == 0 else 2
            # Time is never strided inside a pathway, so the alpha ratio holds at every fusion.
            stride = (1, spatial, spatial)
            slow_in = slow_widths[i] + 2 * fast_widths[i]
            kt = slow_temporal_kernels[i]
            self.slow["stages"].append(ResBlock(slow_in, slow_widths[i + 1], (kt, 3, 3), stride))
            self.fast["stages"].append(
                ResBlock(fast_widths[i], fast_widths[i + 1], (3, 3, 3), stride)
            )
        self.num_features = slow_widths[-1] + fast_widths[-1]
        self.head = SlowFastHead(self.num_features, num_classes, dropout)

    def forward_features(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``[slow, fast]`` -> the last stage of each pathway ``[slow', fast']``."""
        if not isinstance(xs, (list, tuple)) or len(xs) != 2:
            raise StbiasError(
                f"slowfast_tiny expects a list [slow, fast] of (B, C, T, H, W) tensors; "
                f"got {type(xs).__name__} of length {len(xs) if hasattr(xs, '__len__') else '?'}"
            )
        slow, fast = self.slow["stem"](xs[0]), self.fast["stem"](xs[1])
        for fusion, slow_stage, fast_stage in zip(
            self.fusions, self.slow["stages"], self.fast["stages"]
        ):
            slow = slow_stage(fusion(slow, fast))
            fast = fast_stage(fast)
        return [slow, fast]

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        """``[slow, fast]`` -> logits ``(B, num_classes)``."""
        return self.head(self.forward_features(xs))


def slowfast_tiny(
    *, num_classes: int = 10, in_channels: int = 3, alpha: int = 4, dropout: float = 0.0
) -> TinySlowFast:
    """Tiny SlowFast: slow widths 16-32-64-128, fast 4-8-16-32 (channel ratio 1/4), fusion after
    the stem and after every stage but the last; slow temporal kernels only in the last stage."""
    check_classifier_args("slowfast_tiny", num_classes, in_channels, dropout)
    if alpha < 1:
        raise StbiasError(f"slowfast_tiny alpha (fast/slow frame ratio) must be >= 1; got {alpha}")
    return TinySlowFast(
        num_classes=num_classes,
        in_channels=in_channels,
        alpha=alpha,
        slow_widths=_WIDTHS,
        fast_widths=tuple(w // 4 for w in _WIDTHS),
        slow_temporal_kernels=(1, 1, 3),
        dropout=dropout,
    )


__all__ = [
    "FastToSlow",
    "Head",
    "PathwayPool",
    "ResBlock",
    "SlowFastHead",
    "TinySlowFast",
    "TinyVideoNet",
    "c2d_tiny",
    "conv_bn_relu",
    "i3d_tiny",
    "slowfast_tiny",
]
