"""Video data: readers for real datasets, clip sampling, and the synthetic BrushMNIST and P+F+M.

Sample layout (every dataset here): a dict with

* ``video``: uint8 tensor ``(T, H, W, C)``, already resized and cropped to the requested size
  (``C`` = 3, RGB; BrushMNIST: 1 unless ``channels=3``);
* ``label``: int class index (``-1`` where a split has no labels, e.g. SSv2 test);
* ``id``: str, the video's name (Kinetics: ``<youtube_id>_<start>_<end>``; ActivityNet:
  ``<video>_<segment>``; synthetic: ``<dataset>_<split>_<index>``);
* ``index``: int, the sample's position in the dataset.

Real datasets add ``view`` (multi-view index), ``frame_indices`` ``(T,)`` (decoded frame numbers),
``frame_times`` ``(T,)`` (their times in seconds), ``source`` (the file stem or frame folder name
of the video, e.g. ``v_<id>`` for ActivityNet, where one video gives several samples) and
``skipped`` (1 when the video at ``index`` could not be read and the sample comes from the
next readable one, else 0; see :class:`VideoClipDataset`); the segmentation datasets (DAVIS,
TAO-VOS, ImageNet VID, MoCA and the synthetic ``camouflage`` / ``salient``) add ``mask``
``(T, H, W)`` 0/1 (255 where a frame is not annotated) and, where flow images are read, ``flow``
``(T - 1, H, W, 3)`` uint8 (frame ``t``'s flow to ``t + 1`` rendered as an image); their ``label``
is the sequence's position (each synthetic clip is its own sequence). The video instance
segmentation sets (``vis_synthetic``, ``youtube_vis``) add ``instance_masks`` ``(N, T, H, W)``
bool, ``instance_labels`` ``(N,)`` (-1: padding) and ``instance_boxes`` ``(N, T, 4)`` (see
:mod:`stbias.data.vis_synthetic`). Stylized frame folders add
``style``. Synthetic datasets add ``shape_label`` / ``motion_label``
(the trajectory class), ``brush_label`` (BrushMNIST) or ``place_label`` (P+F+M), both also as
``appearance_label``, and ``trajectory`` ``(T, 2)``: the (y, x) pixel the brush is centred on
(BrushMNIST also ``trajectory_digit``, the index of the MNIST digit that gave the path). Both
declare how their ``label`` is made of a motion and an appearance class, ``label_factors``
(see :mod:`stbias.metrics.breakdown`).

The default collate stacks samples into ``(B, T, H, W, C)``; :func:`video_to_float` turns that
into the float ``(B, C, T, H, W)`` in [0, 1] that stylizers and models take.
"""

from __future__ import annotations

import torch

from stbias.data.brushmnist import BrushMNIST
from stbias.data.clips import crop_box, resize_short_side, temporal_indices
from stbias.data.datasets import (
    activitynet,
    davis,
    diving48,
    frame_folder,
    imagenet_vid,
    kinetics,
    kth,
    ssv2,
    tao_vos,
    video_folder,
)
from stbias.data.moca import moca
from stbias.data.pfm import PlacesFacesMNIST
from stbias.data.video import VideoClipDataset, VideoRecord
from stbias.data.vis_synthetic import SyntheticVIS
from stbias.data.vos import SyntheticVOS
from stbias.data.youtube_vis import YouTubeVIS
from stbias.errors import StbiasError

__all__ = [
    "BrushMNIST",
    "PlacesFacesMNIST",
    "SyntheticVIS",
    "SyntheticVOS",
    "VideoClipDataset",
    "VideoRecord",
    "YouTubeVIS",
    "activitynet",
    "brushmnist",
    "crop_box",
    "davis",
    "diving48",
    "frame_folder",
    "imagenet_vid",
    "kinetics",
    "kth",
    "moca",
    "pfm",
    "resize_short_side",
    "ssv2",
    "tao_vos",
    "temporal_indices",
    "video_folder",
    "video_to_float",
]

brushmnist = BrushMNIST
pfm = PlacesFacesMNIST


def video_to_float(video: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, T, H, W, C)`` -> float ``(B, C, T, H, W)`` in [0, 1] (also unbatched
    ``(T, H, W, C)`` -> ``(C, T, H, W)``)."""
    if video.dim() not in (4, 5):
        raise StbiasError(
            f"expected (B, T, H, W, C) or (T, H, W, C), got shape {tuple(video.shape)}"
        )
    video = video.movedim(-1, -4)
    if video.dtype == torch.uint8:
        return video.float().div_(255.0)
    return video.float()
