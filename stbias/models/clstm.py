"""Convolutional LSTM classifier of Mänttäri et al. (ACCV'20, Sec. 4.2).

A stack of ConvLSTM layers (Shi et al., NeurIPS'15), each followed by batch norm and spatial max
pooling; every layer returns its whole hidden-state sequence, which is the next layer's input. The
paper uses three layers of 32 filters with 5x5 kernels and stride 2 for Something-Something (two
for KTH). The input-to-state convolution carries the stride and the bias; the state-to-state
convolution runs at the strided resolution with stride 1 and no bias, as in Keras' ``ConvLSTM2D``,
so a layer has ``4 * (k*k*C_in*F + k*k*F*F + F)`` weights.

The head averages the last layer's sequence over time and space and applies a linear layer, so
the whole sequence reaches the classifier and any input size works. (The paper's parameter count,
1,324,014, implies a flatten-and-dense head tied to a 224x224 input; the ConvLSTM layers
themselves are identical.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from stbias.errors import StbiasError


class ConvLSTM(nn.Module):
    """One ConvLSTM layer over a whole sequence: ``(B, C, T, H, W)`` -> ``(B, F, T, H', W')``.

    ``H' = ceil(H / stride)``. Gates are ordered input, forget, cell, output. The initial hidden
    and cell states are zero.
    """

    def __init__(
        self, in_channels: int, hidden_channels: int, kernel_size: int = 5, stride: int = 1
    ) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        pad = kernel_size // 2
        self.input_conv = nn.Conv2d(
            in_channels, 4 * hidden_channels, kernel_size, stride=stride, padding=pad
        )
        self.hidden_conv = nn.Conv2d(
            hidden_channels, 4 * hidden_channels, kernel_size, padding=pad, bias=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the recurrence forward in time and return every hidden state."""
        b, _, t = x.shape[:3]
        # The input part of every gate does not depend on the state: one batched convolution.
        frames = x.transpose(1, 2).flatten(0, 1)
        gates_x = self.input_conv(frames).unflatten(0, (b, t))
        h = gates_x.new_zeros(b, self.hidden_channels, *gates_x.shape[-2:])
        c = torch.zeros_like(h)
        outputs = []
        # unbind, not gates_x[:, step]: the backward of T selects would build T full-size
        # gradients of gates_x; unbind's backward stacks once
        for step in gates_x.unbind(1):
            i, f, g, o = (step + self.hidden_conv(h)).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs, dim=2)


class ConvLSTMBlock(nn.Module):
    """ConvLSTM (``clstm``), batch norm (``bn``) and spatial max pooling (``pool``)."""

    def __init__(
        self, in_channels: int, hidden_channels: int, kernel_size: int, stride: int, pool: int
    ) -> None:
        super().__init__()
        self.clstm = ConvLSTM(in_channels, hidden_channels, kernel_size, stride)
        self.bn = nn.BatchNorm3d(hidden_channels)
        # Time is never pooled: every layer passes the full sequence on. ceil_mode keeps small
        # inputs from shrinking to zero size.
        self.pool = nn.MaxPool3d((1, pool, pool), ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> ``(B, F, T, H'', W'')``."""
        return self.pool(self.bn(self.clstm(x)))


class ConvLSTMClassifier(nn.Module):
    """ConvLSTM layers (``layers.0`` ...), global average pooling (``pool``) and ``fc``.

    ``forward`` maps ``(B, C, T, H, W)`` to logits ``(B, num_classes)``.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int = 3,
        hidden_channels: Sequence[int] = (32, 32, 32),
        kernel_size: int = 5,
        stride: int = 2,
        pool: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        blocks = []
        channels = in_channels
        for hidden in hidden_channels:
            blocks.append(ConvLSTMBlock(channels, hidden, kernel_size, stride, pool))
            channels = hidden
        self.layers = nn.ModuleList(blocks)
        self.num_features = channels
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> the last layer's sequence ``(B, F, T, H', W')``."""
        if x.ndim != 5:
            raise StbiasError(
                f"ConvLSTMClassifier expects a (B, C, T, H, W) tensor; got shape {tuple(x.shape)}"
            )
        for layer in self.layers:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> logits ``(B, num_classes)``."""
        x = self.pool(self.forward_features(x)).flatten(1)
        return self.fc(self.dropout(x))


def clstm(
    *,
    num_classes: int,
    in_channels: int = 3,
    num_layers: int = 3,
    hidden_channels: int | Sequence[int] = 32,
    kernel_size: int = 5,
    stride: int = 2,
    pool: int = 2,
    dropout: float = 0.0,
) -> ConvLSTMClassifier:
    """Build the ConvLSTM classifier.

    Args:
        num_classes: Number of output classes.
        in_channels: Input channels.
        num_layers: Number of ConvLSTM layers (3 in the paper for Something-Something, 2 for KTH).
        hidden_channels: Filters per layer: one int for every layer, or one per layer.
        kernel_size: Square kernel of both convolutions of every layer.
        stride: Spatial stride of the input-to-state convolution.
        pool: Spatial max-pooling size and stride after every layer.
        dropout: Drop probability before the classifier.
    """
    if isinstance(hidden_channels, int):
        hidden = [hidden_channels] * num_layers
    else:
        hidden = [int(h) for h in hidden_channels]
    if num_layers < 1 or len(hidden) != num_layers:
        raise StbiasError(
            f"clstm needs num_layers >= 1 and one hidden_channels entry per layer; "
            f"got num_layers={num_layers}, hidden_channels={list(hidden)}"
        )
    if min(hidden) < 1 or num_classes < 1 or in_channels < 1:
        raise StbiasError(
            f"clstm needs positive sizes; got num_classes={num_classes}, "
            f"in_channels={in_channels}, hidden_channels={hidden}"
        )
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise StbiasError(f"clstm kernel_size must be odd and positive; got {kernel_size}")
    if not 0.0 <= dropout < 1.0:
        raise StbiasError(f"dropout must be in [0, 1); got {dropout}")
    return ConvLSTMClassifier(
        num_classes=num_classes,
        in_channels=in_channels,
        hidden_channels=hidden,
        kernel_size=kernel_size,
        stride=stride,
        pool=pool,
        dropout=dropout,
    )


__all__ = ["ConvLSTM", "ConvLSTMBlock", "ConvLSTMClassifier", "clstm"]
