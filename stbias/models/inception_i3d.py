"""Inception-I3D (Carreira & Zisserman, CVPR'17) with Mänttäri et al.'s reduced-stride option.

Module names follow the widely used PyTorch port (``Conv3d_1a_7x7``, ``Mixed_3b`` ... ``Mixed_5c``,
``logits``; inside a block ``b0``, ``b1a``, ``b1b``, ``b2a``, ``b2b``, ``b3a``, ``b3b``; inside a
unit ``conv3d`` and ``bn``), so its released state dicts load by key name. Padding is computed at
run time the way TensorFlow's ``SAME`` padding does it, as in the original release, so those
weights produce the same activations.

Mänttäri et al. (ACCV'20, Sec. 4.2) reduce the temporal stride of the first convolution and of
the second pooling layer to 1 so that ``Mixed_5c`` keeps ``T / 2`` time steps instead of ``T / 8``.
Of the four pooling layers only ``MaxPool3d_4a_3x3`` and ``MaxPool3d_5a_2x2`` stride in time; the
paper's ``T / 2`` is reached by ``Conv3d_1a_7x7`` and ``MaxPool3d_4a_3x3`` with temporal stride 1,
which is what ``reduced_stride=True`` does.

The classifier averages the ``Mixed_5c`` features over time and space (``avg_pool``) and applies a
1x1x1 convolution (``logits``); with a linear classifier this equals averaging per-time-step logits,
and it accepts any input size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from stbias.errors import StbiasError
from stbias.models.checks import check_classifier_args

Triple = tuple[int, int, int]

# (output channels of branch 0, 1a, 1b, 2a, 2b, 3b) of every Inception block, in order.
_BLOCKS: dict[str, tuple[int, int, int, int, int, int]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}

#: Output channels of every block, for layer declarations and tests.
BLOCK_CHANNELS: dict[str, int] = {
    name: out[0] + out[2] + out[4] + out[5] for name, out in _BLOCKS.items()
}


def _same_padding(size: Sequence[int], kernel: Triple, stride: Triple) -> list[int]:
    """TensorFlow ``SAME`` padding for ``F.pad`` on a ``(T, H, W)`` input (last axis first)."""
    pad: list[int] = []
    for s, k, st in reversed(list(zip(size, kernel, stride))):
        total = max(k - st, 0) if s % st == 0 else max(k - s % st, 0)
        pad += [total // 2, total - total // 2]
    return pad


class Unit3D(nn.Module):
    """Convolution with ``SAME`` padding, optional batch norm and ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Triple = (1, 1, 1),
        stride: Triple = (1, 1, 1),
        *,
        batch_norm: bool = True,
        relu: bool = True,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.kernel_size = tuple(kernel_size)
        self.stride = tuple(stride)
        self.relu = relu
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel_size, stride, bias=bias)
        # eps and momentum of the original TensorFlow model, so its statistics keep their meaning.
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.01) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the unit to ``(B, C, T, H, W)``."""
        x = F.pad(x, _same_padding(x.shape[2:], self.kernel_size, self.stride))
        x = self.conv3d(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class MaxPool3dSame(nn.MaxPool3d):
    """Max pooling with ``SAME`` padding (zeros, as in the original release)."""

    def __init__(self, kernel_size: Triple, stride: Triple) -> None:
        super().__init__(kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool ``(B, C, T, H, W)``."""
        return super().forward(F.pad(x, _same_padding(x.shape[2:], self.kernel_size, self.stride)))


class InceptionBlock(nn.Module):
    """Four parallel branches, concatenated: 1x1x1; 1x1x1 -> 3x3x3 (twice); pool -> 1x1x1."""

    def __init__(self, in_channels: int, out: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        self.b0 = Unit3D(in_channels, out[0])
        self.b1a = Unit3D(in_channels, out[1])
        self.b1b = Unit3D(out[1], out[2], (3, 3, 3))
        self.b2a = Unit3D(in_channels, out[3])
        self.b2b = Unit3D(out[3], out[4], (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, out[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, T, H, W)`` -> ``(B, C_out, T, H, W)``."""
        return torch.cat(
            [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1
        )


class InceptionI3d(nn.Module):
    """Inception-v1 inflated to 3D; ``forward`` maps ``(B, C, T, H, W)`` to logits ``(B, classes)``.

    Args:
        num_classes: Number of output classes.
        in_channels: Input channels (3 for RGB, 2 for optical flow, 1 for grey-scale data).
        dropout: Drop probability before the classifier.
        reduced_stride: Temporal stride 1 in ``Conv3d_1a_7x7`` and ``MaxPool3d_4a_3x3``
            (Mänttäri et al.), so ``Mixed_5c`` has ``ceil(T / 2)`` time steps, not ``ceil(T / 8)``.
        width: Multiplies every layer's channel count (rounded, at least 1); 1.0 is the
            published network. A narrow network (e.g. 0.25) trains on a CPU; its channel
            counts are ``round(width * c)`` and the published weights do not fit it.
    """

    def __init__(
        self,
        *,
        num_classes: int = 400,
        in_channels: int = 3,
        dropout: float = 0.5,
        reduced_stride: bool = False,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        t = 1 if reduced_stride else 2
        self.reduced_stride = reduced_stride
        self.width = float(width)
        c = self._scaled
        self.Conv3d_1a_7x7 = Unit3D(in_channels, c(64), (7, 7, 7), (t, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(c(64), c(64))
        self.Conv3d_2c_3x3 = Unit3D(c(64), c(192), (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        channels = c(192)
        self.block_channels: dict[str, int] = {}
        for name, out in _BLOCKS.items():
            if name == "Mixed_4b":
                self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (t, 2, 2))
            elif name == "Mixed_5b":
                self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
            scaled = tuple(c(v) for v in out)
            self.add_module(name, InceptionBlock(channels, scaled))
            channels = scaled[0] + scaled[2] + scaled[4] + scaled[5]
            self.block_channels[name] = channels
        self.num_features = channels
        self.avg_pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.logits = Unit3D(channels, num_classes, batch_norm=False, relu=False, bias=True)

    def _scaled(self, channels: int) -> int:
        return max(1, int(round(channels * self.width)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> ``Mixed_5c`` output ``(B, 1024 * width, T', H', W')``."""
        if x.ndim != 5:
            raise StbiasError(
                f"InceptionI3d expects a (B, C, T, H, W) tensor; got shape {tuple(x.shape)}"
            )
        # Registration order is the forward order: stem, pools and Inception blocks.
        for name, module in self.named_children():
            if name == "avg_pool":
                break
            x = module(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> logits ``(B, num_classes)``."""
        x = self.avg_pool(self.forward_features(x))
        return self.logits(self.dropout(x)).flatten(1)


def inception_i3d(
    *,
    num_classes: int = 400,
    in_channels: int = 3,
    dropout: float = 0.5,
    reduced_stride: bool = False,
    width: float = 1.0,
    bn_momentum: float = 0.01,
) -> InceptionI3d:
    """Build Inception-I3D with random weights (see :class:`InceptionI3d` for the arguments).

    ``bn_momentum`` is PyTorch's batch-norm momentum: 0.01 is the original TensorFlow model's
    decay of 0.99, right for long trainings and released weights; a short training (a few hundred
    steps on a CPU) needs PyTorch's usual 0.1, or the running statistics used in eval mode still
    lag far behind the trained network's.
    """
    check_classifier_args("inception_i3d", num_classes, in_channels, dropout)
    if not float(width) > 0:
        raise StbiasError(f"inception_i3d width must be positive, got {width}")
    if not 0.0 < float(bn_momentum) <= 1.0:
        raise StbiasError(f"inception_i3d bn_momentum must be in (0, 1], got {bn_momentum}")
    model = InceptionI3d(
        num_classes=num_classes,
        in_channels=in_channels,
        dropout=dropout,
        reduced_stride=reduced_stride,
        width=width,
    )
    for module in model.modules():
        if isinstance(module, nn.BatchNorm3d):
            module.momentum = float(bn_momentum)
    return model


__all__ = [
    "BLOCK_CHANNELS",
    "InceptionBlock",
    "InceptionI3d",
    "MaxPool3dSame",
    "Unit3D",
    "inception_i3d",
]
