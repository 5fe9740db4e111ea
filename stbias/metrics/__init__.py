"""Measures: each a ``torchmetrics.Metric`` with sum states plus a functional twin."""

from stbias.metrics.pairs import FACTORS, UNIT_CLASSES, PairStatistics, score_pairs

__all__ = ["FACTORS", "UNIT_CLASSES", "PairStatistics", "score_pairs"]
