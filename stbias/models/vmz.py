"""R(2+1)D-34 and ir-CSN-152 as VMZ released them in PyTorch (Tran et al. ICCV'19, CVPR'18).

The released state dicts — IG-65M-pretrained and Kinetics-fine-tuned R(2+1)D-34
(``moabitcoin/ig65m-pytorch``, also listed by ``facebookresearch/VMZ``) and ir-CSN-152 trained
on IG-65M or Sports-1M (VMZ's ``pt/`` release) — use torchvision's ``VideoResNet`` key layout:
``stem.<i>``, ``layer<k>.<block>.conv<j>.<i>``, ``layer<k>.<block>.downsample.<i>``, ``fc``. The
networks here are built with the same module tree, so a release file loads key by key through
:func:`stbias.models.weights.load_checkpoint` (``model.checkpoint=<file>``, read with
``weights_only=True``) with no renaming, strict: every tensor of the file lands in the model.

Two details that differ from torchvision's own ``r2plus1d_18`` and that the files depend on:

* each (2+1)D convolution sizes its middle width from its own input and output channels,
  ``mid = (in * out * 27) // (in * 9 + 3 * out)`` (torchvision reuses the block's first value for
  its second convolution), so the second convolution of a widening block has its own width;
* every batch norm has ``eps = 1e-3`` (the Caffe2 originals).

ir-CSN ("interaction-reduced") replaces each bottleneck's 3x3x3 convolution by a channel-wise
(depthwise) one, ``(C, 1, 3, 3, 3)``; its stem is a full ``(3, 7, 7)`` convolution and a max pool.
``layers`` and ``widths`` shrink the networks (tests, embedded runs); the releases are
``layers=[3, 4, 6, 3]`` (R(2+1)D-34) and ``[3, 8, 36, 3]`` (CSN-152), widths ``64..512``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from stbias.errors import StbiasError

ARCHS = ("r2plus1d", "ir_csn")
BN_EPS = 1e-3  # the Caffe2 originals'


def mid_width(in_planes: int, out_planes: int) -> int:
    """The middle width of a (2+1)D convolution with as many weights as a full 3x3x3 one."""
    return (in_planes * out_planes * 27) // (in_planes * 9 + 3 * out_planes)


class Conv2Plus1D(nn.Sequential):
    """A spatial ``(1, 3, 3)`` then a temporal ``(3, 1, 1)`` convolution (keys ``0``, ``1``,
    ``3``: conv, batch norm, conv)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int = 1):
        mid = mid_width(in_planes, out_planes)
        super().__init__(
            nn.Conv3d(in_planes, mid, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, out_planes, (3, 1, 1), (stride, 1, 1), (1, 0, 0), bias=False),
        )


def _downsample(in_planes: int, out_planes: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(
        nn.Conv3d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm3d(out_planes)
    )


class BasicBlock2Plus1D(nn.Module):
    """Two (2+1)D convolutions and a shortcut (torchvision's ``BasicBlock`` key layout)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Sequential(
            Conv2Plus1D(in_planes, planes, stride), nn.BatchNorm3d(planes), nn.ReLU(inplace=True)
        )
        self.conv2 = nn.Sequential(Conv2Plus1D(planes, planes), nn.BatchNorm3d(planes))
        self.downsample = _downsample(in_planes, planes, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + shortcut)


class ChannelSeparatedBottleneck(nn.Module):
    """1x1x1 reduce, channel-wise 3x3x3, 1x1x1 expand (x4), a shortcut: ir-CSN's block
    (torchvision's ``Bottleneck`` key layout)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Sequential(
            nn.Conv3d(in_planes, planes, 1, bias=False),
            nn.BatchNorm3d(planes),
            nn.ReLU(inplace=True),
        )
        self.conv2 = nn.Sequential(
            nn.Conv3d(planes, planes, 3, stride=stride, padding=1, groups=planes, bias=False),
            nn.BatchNorm3d(planes),
            nn.ReLU(inplace=True),
        )
        self.conv3 = nn.Sequential(nn.Conv3d(planes, out, 1, bias=False), nn.BatchNorm3d(out))
        self.downsample = _downsample(in_planes, out, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv3(self.conv2(self.conv1(x))) + shortcut)


def _stem(arch: str, width: int, stem_mid: int) -> nn.Sequential:
    if arch == "r2plus1d":
        return nn.Sequential(
            nn.Conv3d(3, stem_mid, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False),
            nn.BatchNorm3d(stem_mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(stem_mid, width, (3, 1, 1), 1, (1, 0, 0), bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
        )
    return nn.Sequential(
        nn.Conv3d(3, width, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False),
        nn.BatchNorm3d(width),
        nn.ReLU(inplace=True),
        nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
    )


class VMZResNet(nn.Module):
    """A video ResNet in torchvision's ``VideoResNet`` key layout; see the module docstring.

    Input ``(B, 3, T, H, W)``; output ``(B, num_classes)`` logits.
    """

    def __init__(
        self,
        arch: str,
        layers: Sequence[int],
        widths: Sequence[int] = (64, 128, 256, 512),
        num_classes: int = 400,
        stem_mid: int = 45,
    ):
        super().__init__()
        if arch not in ARCHS:
            raise StbiasError(f"unknown VMZ architecture {arch!r}; valid: {', '.join(ARCHS)}")
        if len(layers) != 4 or len(widths) != 4 or min(*layers, *widths) < 1:
            raise StbiasError(
                f"layers={list(layers)} and widths={list(widths)} must each be four positive "
                "numbers (blocks and channels per stage)"
            )
        block = BasicBlock2Plus1D if arch == "r2plus1d" else ChannelSeparatedBottleneck
        expansion = getattr(block, "expansion", 1)
        self.stem = _stem(arch, int(widths[0]), int(stem_mid))
        in_planes = int(widths[0])
        for k, (blocks, planes) in enumerate(zip(layers, widths), start=1):
            stride = 1 if k == 1 else 2
            stage = []
            for b in range(int(blocks)):
                stage.append(block(in_planes, int(planes), stride if b == 0 else 1))
                in_planes = int(planes) * expansion
            setattr(self, f"layer{k}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(in_planes, int(num_classes))
        for module in self.modules():
            if isinstance(module, nn.BatchNorm3d):
                module.eps = BN_EPS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for k in range(1, 5):
            x = getattr(self, f"layer{k}")(x)
        return self.fc(self.avgpool(x).flatten(1))


def vmz_resnet(
    *,
    arch: str,
    layers: Sequence[int],
    widths: Sequence[int] = (64, 128, 256, 512),
    num_classes: int = 400,
    stem_mid: int = 45,
) -> VMZResNet:
    """Builder of ``model=r2plus1d_34*`` / ``ir_csn_152*`` (their weights: ``model.checkpoint``)."""
    return VMZResNet(arch, list(layers), list(widths), num_classes, stem_mid)
