"""Model input specs and packing: normalised float clips, one tensor per pathway."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from stbias.errors import StbiasError

# Kinetics statistics used by the pytorchvideo / SlowFast model zoo.
KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)


@dataclass(frozen=True)
class InputSpec:
    """What a model expects: clip length, frame stride, crop size, normalisation, pathways.

    Attributes:
        frames: Frames the model receives (the fast pathway's count for SlowFast).
        sampling_rate: Stride between sampled source frames (the dataset reads it).
        size: Side of the square crop in pixels (the dataset resizes and crops).
        short_side: The shorter side frames are resized to before the crop, in the model
            family's evaluation convention (256 for a 224 crop of the Kinetics models, 128 for
            torchvision's 112); ``None`` resizes to ``size``.
        mean: Per-channel mean subtracted after scaling to [0, 1].
        std: Per-channel standard deviation divided by after subtracting the mean.
        channels: Input channels (3 for RGB, 1 for grey-scale data such as BrushMNIST).
        pathways: 1 for single-pathway models, 2 for SlowFast (`[slow, fast]`).
        alpha: Frame-rate ratio between the fast and slow pathway (SlowFast only).
    """

    frames: int = 8
    sampling_rate: int = 8
    size: int = 224
    short_side: int | None = None
    mean: tuple[float, ...] = field(default=KINETICS_MEAN)
    std: tuple[float, ...] = field(default=KINETICS_STD)
    channels: int = 3
    pathways: int = 1
    alpha: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        for key in ("frames", "sampling_rate", "size", "channels"):
            if int(getattr(self, key)) < 1:
                raise StbiasError(f"input.{key} must be >= 1, got {getattr(self, key)!r}")
        if self.short_side is not None and int(self.short_side) < int(self.size):
            raise StbiasError(
                f"input.short_side={self.short_side} is smaller than input.size={self.size}; "
                "the crop is cut from frames resized to short_side (null: resize to size)"
            )
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise StbiasError(
                f"input.mean and input.std need {self.channels} values (input.channels), "
                f"got {len(self.mean)} and {len(self.std)}"
            )
        if any(s <= 0 for s in self.std):
            raise StbiasError(f"input.std must be positive, got {list(self.std)}")
        if self.pathways not in (1, 2):
            raise StbiasError(f"input.pathways must be 1 or 2, got {self.pathways!r}")
        if self.pathways == 2 and (self.alpha is None or int(self.alpha) < 1):
            raise StbiasError(f"a two-pathway model needs input.alpha >= 1, got {self.alpha!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> InputSpec:
        """Build a spec from a plain mapping (e.g. the model config's `input` node)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise StbiasError(
                f"unknown input key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}"
            )
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain values (as in a model config's ``input`` node)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["mean"], values["std"] = list(self.mean), list(self.std)
        return values

    @property
    def slow_frames(self) -> int:
        """Frames of the slow pathway (`frames // alpha`), or `frames` for one pathway."""
        return self.frames // int(self.alpha) if self.pathways == 2 else self.frames


def slow_indices(frames: int, alpha: int) -> torch.Tensor:
    """Indices of the fast-pathway frames that the slow pathway keeps.

    The same evenly spaced choice as the SlowFast model zoo's `PackPathway`
    (`linspace(0, T - 1, T // alpha)`), so pretrained SlowFast weights see what they were
    trained on. The slow frames are always a subset of the fast ones.
    """
    if frames < alpha:
        raise StbiasError(f"a clip of {frames} frames is shorter than input.alpha={alpha}")
    return torch.linspace(0, frames - 1, frames // alpha).long()


def pack_inputs(video01: torch.Tensor, spec: InputSpec) -> torch.Tensor | list[torch.Tensor]:
    """Normalise a float clip batch and split it into the model's pathways.

    Args:
        video01: Float clips `(B, C, T, H, W)` in [0, 1], already at the model's size.
        spec: The model's input spec.

    A 1-channel clip is repeated over the channels of an RGB model; any other mismatch of
    channels is an error.

    Returns:
        The normalised `(B, C, T, H, W)` tensor, or `[slow, fast]` for two pathways, where
        `fast` is the whole clip and `slow` its frames at `slow_indices(T, alpha)`.
    """
    if not torch.is_tensor(video01) or video01.ndim != 5:
        shape = tuple(video01.shape) if torch.is_tensor(video01) else type(video01).__name__
        raise StbiasError(f"pack_inputs needs a float tensor (B, C, T, H, W), got {shape}")
    if not video01.is_floating_point():
        raise StbiasError(
            f"pack_inputs needs float clips in [0, 1], got dtype {video01.dtype}; "
            "convert uint8 batches with stbias.data.video_to_float"
        )
    channels = video01.shape[1]
    if channels != spec.channels:
        if channels == 1 and spec.channels == 3:
            # grey clips (BrushMNIST) into an RGB network: the same grey in every channel
            video01 = video01.expand(-1, 3, -1, -1, -1)
        else:
            raise StbiasError(
                f"clips have {channels} channel(s) but the model takes model.input.channels="
                f"{spec.channels}; give it {spec.channels}-channel clips (1-channel clips are "
                "repeated for an RGB model, nothing else is converted)"
            )
    mean = video01.new_tensor(spec.mean).view(1, -1, 1, 1, 1)
    std = video01.new_tensor(spec.std).view(1, -1, 1, 1, 1)
    x = (video01 - mean) / std
    if spec.pathways == 1:
        return x
    index = slow_indices(x.shape[2], int(spec.alpha)).to(x.device)
    return [x.index_select(2, index), x]


def spec_shapes(spec: InputSpec, batch: int = 1) -> list[tuple[int, ...]]:
    """The input shape(s) `pack_inputs` produces for a clip of `spec.frames` frames."""
    c, s = spec.channels, spec.size
    if spec.pathways == 1:
        return [(batch, c, spec.frames, s, s)]
    return [(batch, c, spec.slow_frames, s, s), (batch, c, spec.frames, s, s)]
