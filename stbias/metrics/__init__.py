"""Measures: each a ``torchmetrics.Metric`` with sum states plus a functional twin."""

from stbias.metrics.blobs import BlobStatistics, blob_params, frame_blobs, welch_ttest
from stbias.metrics.gradcam import GradCAM
from stbias.metrics.masks import TemporalMask, TemporalMaskStatistics, freeze, reverse
from stbias.metrics.pairs import FACTORS, UNIT_CLASSES, PairStatistics, score_pairs

__all__ = [
    "FACTORS",
    "UNIT_CLASSES",
    "BlobStatistics",
    "GradCAM",
    "PairStatistics",
    "TemporalMask",
    "TemporalMaskStatistics",
    "blob_params",
    "frame_blobs",
    "freeze",
    "reverse",
    "score_pairs",
    "welch_ttest",
]
