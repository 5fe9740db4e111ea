"""Stylization and static/dynamic pair sampling (docs/stylization.md).

Stylizers take float ``(B, C, T, H, W)`` clips in [0, 1] and one style per clip:
``TextureStylizer`` (weight-free, the default), ``PrecomputedStylizer`` (folders of stylized
frames) and ``AdaINStylizer`` (user-supplied weights). ``make_pair_views`` /
``make_flow_pair_views`` (or a configured ``PairSampler``) turn a batch into the views of the
static and dynamic pairs.
"""

from stbias.data.flow import farneback_flow, flow_to_hue_saturation, flow_to_image, hsv_to_rgb
from stbias.stylization.adain import AdaINStylizer
from stbias.stylization.base import Stylizer
from stbias.stylization.flow import make_flow_pair_views
from stbias.stylization.images import EMBEDDED_IMAGES, load_style_image
from stbias.stylization.pairs import (
    PairSampler,
    clip_generator,
    make_pair_views,
    permute_frames,
    shuffle_frames,
    shuffled_views,
    split_views,
    stack_views,
    view_names,
)
from stbias.stylization.precomputed import PrecomputedStylizer
from stbias.stylization.texture import NAMED_STYLES, TextureStylizer

__all__ = [
    "EMBEDDED_IMAGES",
    "NAMED_STYLES",
    "AdaINStylizer",
    "PairSampler",
    "PrecomputedStylizer",
    "Stylizer",
    "TextureStylizer",
    "clip_generator",
    "farneback_flow",
    "flow_to_hue_saturation",
    "flow_to_image",
    "hsv_to_rgb",
    "load_style_image",
    "make_flow_pair_views",
    "make_pair_views",
    "permute_frames",
    "shuffle_frames",
    "shuffled_views",
    "split_views",
    "stack_views",
    "view_names",
]
