"""Hugging Face video transformers (TimeSformer, VideoMAE): needs the optional `hf` extra.

The wrapper takes clips `(B, C, T, H, W)` like every other stbias model (Hugging Face models
read `(B, T, C, H, W)`) and returns the logits tensor. Encoder blocks live at
`net.<backbone>.encoder.layer.<i>`:

* TimeSformer — `(B, 1 + T·N, C)`: the class token first, then T frames × N patches in
  (t, h, w) order (layout `tokens_cls`).
* VideoMAE — `(B, T/2 · N, C)`: tubelets of 2 frames × 16² pixels, no class token (layout
  `tokens`).
"""

from __future__ import annotations

import importlib.util

import torch
from torch import nn

from stbias.errors import StbiasError

# family -> (config class, model class, backbone attribute, default checkpoint)
FAMILIES = {
    "timesformer": (
        "TimesformerConfig",
        "TimesformerForVideoClassification",
        "timesformer",
        "facebook/timesformer-base-finetuned-k400",
    ),
    "videomae": (
        "VideoMAEConfig",
        "VideoMAEForVideoClassification",
        "videomae",
        "MCG-NJU/videomae-base-finetuned-kinetics",
    ),
}


class HFVideo(nn.Module):
    """A Hugging Face video classifier behind the `(B, C, T, H, W) -> logits` interface."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values=x.transpose(1, 2)).logits


def hf_video(
    family: str,
    pretrained: bool = False,
    num_classes: int = 400,
    image_size: int = 224,
    num_frames: int = 8,
    source: str | None = None,
) -> nn.Module:
    """TimeSformer-Base or VideoMAE-Base: random weights, or `from_pretrained(source)`.

    Args:
        family: `timesformer` or `videomae`.
        pretrained: Load `source` (a Hub id or a local directory written by `save_pretrained`).
        num_classes: Classifier outputs; a pretrained head of another size is re-initialised.
        image_size: Input side in pixels (must match the checkpoint when pretrained).
        num_frames: Input frames (must match the checkpoint when pretrained).
        source: Hub id or local directory; defaults to the family's Kinetics-400 checkpoint.
    """
    if family not in FAMILIES:
        raise StbiasError(f"unknown Hugging Face family {family!r}; valid: {', '.join(FAMILIES)}")
    if importlib.util.find_spec("transformers") is None:
        raise StbiasError(
            f"model {family} needs the optional Hugging Face extra: pip install 'stbias[hf]'"
        )
    import transformers

    config_name, model_name, _, default_source = FAMILIES[family]
    config_cls, model_cls = getattr(transformers, config_name), getattr(transformers, model_name)
    if not pretrained:
        config = config_cls(image_size=image_size, num_frames=num_frames, num_labels=num_classes)
        return HFVideo(model_cls(config))
    source = source or default_source
    try:
        net = model_cls.from_pretrained(
            source, num_labels=num_classes, ignore_mismatched_sizes=True
        )
    except OSError as err:
        raise StbiasError(
            f"could not load the pretrained {family} weights from {source!r} ({err}). Without "
            f"network, run {model_name}.from_pretrained({default_source!r}).save_pretrained(DIR) "
            "on another machine, copy DIR here and pass model.builder.source=DIR"
        ) from None
    got = (int(net.config.image_size), int(net.config.num_frames))
    if got != (image_size, num_frames):
        raise StbiasError(
            f"{source!r} expects input.size={got[0]} and input.frames={got[1]}, the model config "
            f"asks for size={image_size} frames={num_frames}"
        )
    return HFVideo(net)
