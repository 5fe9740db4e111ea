"""S3D-G trained on HowTo100M (Miech et al. CVPR'20), as ``antoine77340/S3D_HowTo100M`` released it.

The release file ``s3d_howto100m.pth`` is a plain state dict of the whole text-video model: the
gated separable 3D video trunk (S3D-G, Xie et al. ECCV'18, with a space-to-depth first
convolution), its 512-d video projection ``fc`` and the text module (``text_module.word_embd``,
``fc1``, ``fc2``). The module tree here has the release's names — ``conv1``, ``conv_2b``,
``conv_2c``, ``gating``, ``mixed_3b`` … ``mixed_5c`` (branches ``conv_b0``, ``conv_b1_a``,
``conv_b1_b``, ``conv_b2_a``, ``conv_b2_b``, ``conv_b3_b``, ``gating_b0`` … ``gating_b3``), each
convolution unit ``conv1``/``bn1`` (+ ``conv2``/``bn2`` when separable into ``(1, k, k)`` then
``(k, 1, 1)``) — so the file loads key by key, strictly, through ``model.checkpoint=<file>``. The
text module is built too (its tensors are part of the file) but the forward pass is the video
side only: ``(B, 3, T, H, W)`` clips in ``[0, 1]`` (no normalisation; ``T``, ``H``, ``W`` even)
to the ``(B, 512)`` video embedding. Byvshev et al. Fig. 11(b) measures this trunk's temporal
convolutions: the first ``(2, 4, 4)`` one and every ``(3, 1, 1)`` factor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

EMBEDDING = 512  # the joint text-video space
VOCABULARY, WORD_DIM, TEXT_HIDDEN = 66250, 300, 2048

# per block: input channels, then b0, b1 reduce, b1, b2 reduce, b2, b3 (Inception-v1 widths)
BLOCKS: dict[str, tuple[int, ...]] = {
    "mixed_3b": (192, 64, 96, 128, 16, 32, 32),
    "mixed_3c": (256, 128, 128, 192, 32, 96, 64),
    "mixed_4b": (480, 192, 96, 208, 16, 48, 64),
    "mixed_4c": (512, 160, 112, 224, 24, 64, 64),
    "mixed_4d": (512, 128, 128, 256, 24, 64, 64),
    "mixed_4e": (512, 112, 144, 288, 32, 64, 64),
    "mixed_4f": (528, 256, 160, 320, 32, 128, 128),
    "mixed_5b": (832, 256, 160, 320, 32, 128, 128),
    "mixed_5c": (832, 384, 192, 384, 48, 128, 128),
}
# a TF "SAME" max pool before these blocks: (kernel, stride)
POOLS = {
    "mixed_3b": ((1, 3, 3), (1, 2, 2)),
    "mixed_4b": ((3, 3, 3), (2, 2, 2)),
    "mixed_5b": ((2, 2, 2), (2, 2, 2)),
}


class Unit(nn.Module):
    """Convolution, batch norm, ReLU; ``separable`` splits a ``(k, k, k)`` kernel into a spatial
    ``conv1`` ``(1, k, k)`` and a temporal ``conv2`` ``(k, 1, 1)``, each with its norm."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: Sequence[int],
        stride: int = 1,
        padding: int | Sequence[int] = 0,
        separable: bool = False,
    ):
        super().__init__()
        self.separable = separable
        if separable:
            k, p = int(kernel[0]), int(padding)
            self.conv1 = nn.Conv3d(cin, cout, (1, k, k), (1, stride, stride), (0, p, p), bias=False)
            self.bn1 = nn.BatchNorm3d(cout)
            self.conv2 = nn.Conv3d(cout, cout, (k, 1, 1), (stride, 1, 1), (p, 0, 0), bias=False)
            self.bn2 = nn.BatchNorm3d(cout)
        else:
            self.conv1 = nn.Conv3d(cin, cout, tuple(kernel), stride, padding, bias=False)
            self.bn1 = nn.BatchNorm3d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x))) if self.separable else x


class SelfGating(nn.Module):
    """Channels scaled by a sigmoid of a linear map of their space-time mean (S3D-G)."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.sigmoid(self.fc(x.mean(dim=(2, 3, 4))))
        return x * weights[:, :, None, None, None]


class GatedInception(nn.Module):
    """Four branches (1x1x1; 1x1x1 then separable 3x3x3, twice; max pool then 1x1x1), each
    self-gated, concatenated."""

    def __init__(self, cin: int, b0: int, b1a: int, b1: int, b2a: int, b2: int, b3: int):
        super().__init__()
        self.conv_b0 = Unit(cin, b0, (1, 1, 1))
        self.conv_b1_a = Unit(cin, b1a, (1, 1, 1))
        self.conv_b1_b = Unit(b1a, b1, (3, 3, 3), padding=1, separable=True)
        self.conv_b2_a = Unit(cin, b2a, (1, 1, 1))
        self.conv_b2_b = Unit(b2a, b2, (3, 3, 3), padding=1, separable=True)
        self.maxpool_b3 = nn.MaxPool3d(3, stride=1, padding=1)
        self.conv_b3_b = Unit(cin, b3, (1, 1, 1))
        for k, width in enumerate((b0, b1, b2, b3)):
            setattr(self, f"gating_b{k}", SelfGating(width))
        self.out_channels = b0 + b1 + b2 + b3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (
            self.conv_b0(x),
            self.conv_b1_b(self.conv_b1_a(x)),
            self.conv_b2_b(self.conv_b2_a(x)),
            self.conv_b3_b(self.maxpool_b3(x)),
        )
        return torch.cat([getattr(self, f"gating_b{k}")(b) for k, b in enumerate(branches)], 1)


def same_max_pool(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
    """TensorFlow's ``SAME`` max pooling: zero padding split low/high, ceil mode."""
    pads = []
    for k, s in zip(reversed(kernel), reversed(stride)):  # F.pad: last dimension first
        total = max(int(k) - int(s), 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool3d(F.pad(x, pads), tuple(kernel), tuple(stride), ceil_mode=True)


class TextModule(nn.Module):
    """The release's text side (word embedding, two linear maps); kept for its weights."""

    def __init__(self, vocabulary: int = VOCABULARY, embedding: int = EMBEDDING):
        super().__init__()
        self.word_embd = nn.Embedding(vocabulary, WORD_DIM)
        self.fc1 = nn.Linear(WORD_DIM, TEXT_HIDDEN)
        self.fc2 = nn.Linear(TEXT_HIDDEN, embedding)


class S3DHowTo100M(nn.Module):
    """S3D-G's video trunk and projection in the release's key layout; see the module docstring.

    Input ``(B, 3, T, H, W)`` with even ``T``, ``H``, ``W``; output ``(B, embedding)``.
    """

    def __init__(self, embedding: int = EMBEDDING, vocabulary: int = VOCABULARY):
        super().__init__()
        # space to depth: 2x2x2 neighbourhoods become 8 x 3 = 24 channels
        self.conv1 = Unit(24, 64, (2, 4, 4), padding=(1, 2, 2))
        self.conv_2b = Unit(64, 64, (1, 1, 1))
        self.conv_2c = Unit(64, 192, (3, 3, 3), padding=1, separable=True)
        self.gating = SelfGating(192)
        for name, widths in BLOCKS.items():
            setattr(self, name, GatedInception(*widths))
        self.fc = nn.Linear(self.mixed_5c.out_channels, embedding)
        self.text_module = TextModule(vocabulary, embedding)

    @staticmethod
    def space_to_depth(x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> ``(B, 8C, T/2, H/2, W/2)``, offsets major, channels minor."""
        b, c, t, h, w = x.shape
        x = x.view(b, c, t // 2, 2, h // 2, 2, w // 2, 2).permute(0, 3, 5, 7, 1, 2, 4, 6)
        return x.reshape(b, 8 * c, t // 2, h // 2, w // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.space_to_depth(x))[:, :, 1:, 1:, 1:]  # TF "SAME" of the original
        x = same_max_pool(x, (1, 3, 3), (1, 2, 2))
        x = self.gating(self.conv_2c(self.conv_2b(x)))
        for name in BLOCKS:
            if name in POOLS:
                x = same_max_pool(x, *POOLS[name])
            x = getattr(self, name)(x)
        return self.fc(x.mean(dim=(2, 3, 4)))


def s3d_howto100m(*, embedding: int = EMBEDDING, vocabulary: int = VOCABULARY) -> S3DHowTo100M:
    """Builder of ``model=s3d_howto100m`` (its weights: ``model.checkpoint=s3d_howto100m.pth``)."""
    return S3DHowTo100M(embedding, vocabulary)
