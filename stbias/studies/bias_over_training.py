"""Bias over training (Kowal et al., extended): how the static/dynamic split settles as a model
trains.

Two single runs make it: ``task=train`` with ``train.checkpoint_every`` keeps a checkpoint series,
and ``task=probe probe.checkpoints=<that run>`` probes every checkpoint of it in one process
(:mod:`stbias.tasks.probe_series`, a single run of the probe task). This module draws the figure
target from the probe run's rows (``make bias-over-training``).
"""

from __future__ import annotations

import pandas as pd

from stbias.errors import StbiasError
from stbias.plotting.bias_over_training import bias_over_training


def bias_over_training_figure(table: pd.DataFrame, title: str | None = None):
    """The split (%) and ``S_F`` of every layer against the training step of a probed series."""
    if "step" not in table.columns:
        raise StbiasError("no runs to draw: the table holds no probed checkpoint series")
    series = table[(table["task"] == "probe") & table["step"].notna()]
    runs = series["run"].unique()
    if len(runs) != 1:
        raise StbiasError(
            f"bias over training draws one probed series; the table holds {len(runs)}"
        )
    return bias_over_training(series.to_dict("records"), title=title)
