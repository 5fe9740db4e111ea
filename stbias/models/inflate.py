"""Inflation of a frame-wise network into a 3D one, as I3D inflates ImageNet weights.

A convolution whose temporal extent is 1 (``Conv3d`` with a ``(1, k, k)`` kernel, or a
``Conv2d``) becomes a ``(T, k, k)`` convolution whose weights are the 2D kernel repeated ``T``
times and divided by ``T``. Time is padded by repeating the edge frames (I3D pads with zeros):
then a static clip (one image repeated in time) gives every layer, at every frame, exactly the
2D network's output on that image — the known answer Byvshev et al.'s Table A.4 rests on.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from stbias.errors import StbiasError


class InflatedConv3d(nn.Module):
    """A ``Conv3d`` whose input is padded in time by repeating its first and last frames.

    ``conv`` pads space only (its temporal padding is 0); ``forward`` pads time by
    ``conv.kernel_size[0] // 2`` frames on either side first: ``(B, C, T, H, W)`` ->
    ``(B, C', T', H', W')``.
    """

    def __init__(self, conv: nn.Conv3d) -> None:
        super().__init__()
        if conv.padding[0] != 0 or conv.kernel_size[0] % 2 != 1:
            raise StbiasError(
                "InflatedConv3d takes a convolution with an odd temporal kernel and no temporal "
                f"padding; got kernel {conv.kernel_size}, padding {conv.padding}"
            )
        self.conv = conv
        self.time_pad = conv.kernel_size[0] // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> the convolution of the time-padded clip."""
        if self.time_pad:
            x = F.pad(x, (0, 0, 0, 0, self.time_pad, self.time_pad), mode="replicate")
        return self.conv(x)


def inflate_conv(conv: nn.Conv2d | nn.Conv3d, time: int) -> InflatedConv3d:
    """``conv`` (temporal extent 1) with a temporal kernel of ``time``: weights repeated ``time``
    times over time and divided by ``time``; bias, strides (temporal stride 1) and groups kept."""
    if time < 1 or time % 2 != 1:
        raise StbiasError(f"the inflated temporal kernel must be odd and >= 1; got {time}")
    weight = conv.weight.detach()
    if isinstance(conv, nn.Conv2d):
        weight = weight.unsqueeze(2)
        kernel, stride = tuple(conv.kernel_size), tuple(conv.stride)
        padding, dilation = tuple(conv.padding), tuple(conv.dilation)
    elif isinstance(conv, nn.Conv3d) and conv.kernel_size[0] == 1 and conv.stride[0] == 1:
        kernel, stride = tuple(conv.kernel_size[1:]), tuple(conv.stride[1:])
        padding, dilation = tuple(conv.padding[1:]), tuple(conv.dilation[1:])
    else:
        raise StbiasError(
            "inflate_conv takes a Conv2d or a Conv3d with temporal kernel and stride 1; got "
            f"{type(conv).__name__} with kernel {conv.kernel_size}, stride {conv.stride}"
        )
    if isinstance(padding[0], str):
        raise StbiasError(f"inflate_conv takes numeric padding; got {conv.padding!r}")
    inflated = nn.Conv3d(
        conv.in_channels,
        conv.out_channels,
        (time, *kernel),
        stride=(1, *stride),
        padding=(0, *padding),
        dilation=(1, *dilation),
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        inflated.weight.copy_(weight.repeat(1, 1, time, 1, 1) / time)
        if conv.bias is not None:
            inflated.bias.copy_(conv.bias.detach())
    return InflatedConv3d(inflated)


def inflate(model: nn.Module, time: int = 3) -> nn.Module:
    """A copy of a frame-wise video network (e.g. ``c2d_tiny``) with every ``(1, k, k)``
    convolution (``k > 1``) inflated to ``(time, k, k)`` (:func:`inflate_conv`).

    Pointwise ``1x1x1`` convolutions, normalisation, pooling and the classifier stay as they are
    (a frame-wise network's pooling has temporal extent 1 already). Module paths keep their names
    with ``.conv`` appended for an inflated convolution's own weights, so layer aliases that name
    blocks still apply.
    """
    inflated = copy.deepcopy(model)
    replaced = 0
    for module in list(inflated.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Conv3d) and child.kernel_size[0] == 1:
                if max(child.kernel_size[1:]) > 1:
                    setattr(module, child_name, inflate_conv(child, time))
                    replaced += 1
    if not replaced:
        raise StbiasError(
            "inflate found no frame-wise (1, k, k) convolution to inflate; it takes a network "
            "like c2d_tiny whose kernels have temporal extent 1"
        )
    return inflated
