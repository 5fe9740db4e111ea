"""Argument checks the stbias-defined classifiers share."""

from __future__ import annotations

from stbias.errors import StbiasError


def check_classifier_args(name: str, num_classes: int, in_channels: int, dropout: float) -> None:
    """Refuse a classifier without classes or input channels, or an impossible dropout."""
    if num_classes < 1 or in_channels < 1:
        raise StbiasError(
            f"{name} needs num_classes >= 1 and in_channels >= 1; "
            f"got num_classes={num_classes}, in_channels={in_channels}"
        )
    if not 0.0 <= dropout < 1.0:
        raise StbiasError(f"{name}: dropout must be in [0, 1); got {dropout}")
