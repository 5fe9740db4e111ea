"""Model input specs and packing: normalised float clips, one tensor per pathway."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from stbias.data.clips import check_float_clip
from stbias.errors import StbiasError

# Kinetics statistics used by the pytorchvideo / SlowFast model zoo.
KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)
# ImageNet statistics of timm's image backbones (also used for flow images, as two-stream VOS
# models do).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
        flow: The model takes two streams, ``[rgb, flow image]``: RGB frame ``t`` and the optical
            flow from frame ``t`` to ``t + 1`` rendered as an RGB image (hue = direction,
            saturation = magnitude). A clip of ``frames`` frames gives ``frames - 1`` of each.
        flow_mean: Per-channel mean of the flow image (two-stream models).
        flow_std: Per-channel standard deviation of the flow image (two-stream models).
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
    flow: bool = False
    flow_mean: tuple[float, ...] = field(default=IMAGENET_MEAN)
    flow_std: tuple[float, ...] = field(default=IMAGENET_STD)

    def __post_init__(self):
        for key in ("mean", "std", "flow_mean", "flow_std"):
            object.__setattr__(self, key, tuple(float(v) for v in getattr(self, key)))
        if not isinstance(self.flow, bool):
            raise StbiasError(f"input.flow must be true or false, got {self.flow!r}")
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
        if self.flow:
            if self.pathways != 1:
                raise StbiasError(
                    "input.flow=true (an RGB + flow two-stream model) needs input.pathways=1; "
                    f"got pathways={self.pathways}"
                )
            if self.frames < 2:
                raise StbiasError(
                    f"input.flow=true needs input.frames >= 2 (flow runs from frame t to t + 1); "
                    f"got {self.frames}"
                )
            if len(self.flow_mean) != 3 or len(self.flow_std) != 3:
                raise StbiasError(
                    "input.flow_mean and input.flow_std need 3 values (the flow image is RGB), "
                    f"got {len(self.flow_mean)} and {len(self.flow_std)}"
                )
            if any(s <= 0 for s in self.flow_std):
                raise StbiasError(f"input.flow_std must be positive, got {list(self.flow_std)}")

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
        for key in ("mean", "std", "flow_mean", "flow_std"):
            values[key] = list(values[key])
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


def _normalise(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    return (x - x.new_tensor(mean).view(1, -1, 1, 1, 1)) / x.new_tensor(std).view(1, -1, 1, 1, 1)


def _rgb_channels(video01: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    channels = video01.shape[1]
    if channels == spec.channels:
        return video01
    if channels == 1 and spec.channels == 3:
        # grey clips (BrushMNIST) into an RGB network: the same grey in every channel
        return video01.expand(-1, 3, -1, -1, -1)
    raise StbiasError(
        f"clips have {channels} channel(s) but the model takes model.input.channels="
        f"{spec.channels}; give it {spec.channels}-channel clips (1-channel clips are "
        "repeated for an RGB model, nothing else is converted)"
    )


def two_stream_error(spec: InputSpec, model_name: str = "the model") -> StbiasError:
    """The error for RGB + flow input (two-stream pairs) given to a model that takes one clip."""
    if spec.pathways == 2:
        kind = (
            f"{model_name} is a two-pathway model: its [slow, fast] inputs are both RGB frames of "
            "one clip, not RGB + optical flow"
        )
    else:
        kind = f"{model_name} takes one RGB clip (model.input.flow=false)"
    return StbiasError(
        f"RGB + flow two-stream input (stylization.two_stream=true) does not fit: {kind}; use "
        "stylization.two_stream=false, or a two-stream model such as model=twostream_seg"
    )


def check_pair_input(spec: InputSpec, two_stream: bool, model_name: str = "the model") -> None:
    """Refuse pairs the model cannot take: flow-jitter pairs need an RGB + flow model and back."""
    if two_stream and not spec.flow:
        raise two_stream_error(spec, model_name)
    if spec.flow and not two_stream:
        raise StbiasError(
            f"{model_name} takes RGB + optical flow (model.input.flow=true): its pairs are "
            "flow-jitter pairs (stylization.two_stream=true), not frame-shuffled clips; leave "
            "stylization.two_stream at its default (it follows model.input.flow)"
        )


def pack_inputs(
    video01: torch.Tensor | list[torch.Tensor], spec: InputSpec
) -> torch.Tensor | list[torch.Tensor]:
    """Normalise a float clip batch and split it into the model's pathways or streams.

    Args:
        video01: Float clips `(B, C, T, H, W)` in [0, 1], already at the model's size; for a
            two-stream model (`spec.flow`) also `[rgb, flow_image]`, two such tensors of
            `T - 1` frames each (RGB frame `t` and the flow image from `t` to `t + 1`).
        spec: The model's input spec.

    A 1-channel clip is repeated over the channels of an RGB model; any other mismatch of
    channels is an error. Packing computes nothing from the frames: a two-stream model takes
    ``[rgb, flow image]`` rendered on the data side (``stbias.data.flow.two_stream_input``).

    Returns:
        The normalised `(B, C, T, H, W)` tensor; `[slow, fast]` for two pathways, where `fast`
        is the whole clip and `slow` its frames at `slow_indices(T, alpha)`; `[rgb, flow]` for
        a two-stream model, each normalised by its own mean and std.
    """
    if isinstance(video01, (list, tuple)):
        if not spec.flow:
            raise two_stream_error(spec)
        if len(video01) != 2:
            raise StbiasError(
                f"a two-stream model takes [rgb, flow image]; got a list of {len(video01)}"
            )
        rgb, flow = video01
        for part, what in ((rgb, "the RGB stream"), (flow, "the flow stream")):
            check_float_clip(part, f"pack_inputs ({what})", channels=())
        if flow.shape[1] != 3 or rgb.shape[0] != flow.shape[0] or rgb.shape[2:] != flow.shape[2:]:
            raise StbiasError(
                f"RGB stream {tuple(rgb.shape)} and flow image {tuple(flow.shape)} do not pair: "
                "the flow image is (B, 3, T, H, W) like the RGB frames it starts from"
            )
        return [
            _normalise(_rgb_channels(rgb, spec), spec.mean, spec.std),
            _normalise(flow, spec.flow_mean, spec.flow_std),
        ]
    check_float_clip(video01, "pack_inputs", channels=())
    if spec.flow:
        raise StbiasError(
            "a two-stream model (input.flow) takes [rgb, flow image], not one clip: render the "
            "flow on the data side (stbias.data.flow.two_stream_input, or the dataset's flow)"
        )
    x = _normalise(_rgb_channels(video01, spec), spec.mean, spec.std)
    if spec.pathways == 1:
        return x
    index = slow_indices(x.shape[2], int(spec.alpha)).to(x.device)
    return [x.index_select(2, index), x]


def spec_shapes(spec: InputSpec, batch: int = 1) -> list[tuple[int, ...]]:
    """The input shape(s) `pack_inputs` produces for a clip of `spec.frames` frames."""
    c, s = spec.channels, spec.size
    if spec.flow:
        return [(batch, c, spec.frames - 1, s, s), (batch, 3, spec.frames - 1, s, s)]
    if spec.pathways == 1:
        return [(batch, c, spec.frames, s, s)]
    return [(batch, c, spec.slow_frames, s, s), (batch, c, spec.frames, s, s)]
