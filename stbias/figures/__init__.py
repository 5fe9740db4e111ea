"""Paper figures as ``make`` targets: the registry.

A target is an entry of :data:`FIGURES`: the experiment configs whose runs it draws
(``stbias/conf/experiment/figures/<name>.yaml``, each a Hydra multirun: the paper's models,
layers, datasets, λ and clip counts), the same for its embedded variant (data that ships, tiny or
reduced models; earlier experiments may feed later ones, e.g. training then probing), and one
plotting function that takes the table :func:`stbias.results.load` reads from those runs.
``make <name>`` / ``python -m stbias.figures <name>`` runs the multiruns and draws
(:mod:`stbias.figures.make`); ``make figures`` lists every target with what it needs.

Adding a target: one experiment config (its ``paths`` leaves ``???`` name the data and weights
it needs), one plotting function ``(table, title=..., **figure options) -> Figure`` and one entry
here. docs/figures.md says how.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stbias.errors import StbiasError
from stbias.plotting.pairs import fig1, fig3, fig5_left, fig6
from stbias.plotting.training import fig5_right
from stbias.plotting.weights import asdt_figure, channels_figure


@dataclass(frozen=True)
class Figure:
    """A paper figure or table and how to make it.

    Attributes:
        title: what it is, e.g. ``Kowal et al. CVPR'22, Fig. 3``; the figure's title.
        about: one line on what it shows.
        plot: ``(table, title=..., **options) -> matplotlib Figure``; ``options`` are the keys of
            the experiments' ``figure`` nodes that the function takes.
        experiments: experiment configs (under ``experiment/figures/``) run for the real figure.
        embedded: experiment configs of the embedded variant, in order.
        checks: texts the drawn figure must contain (panel titles, axis labels, legend entries);
            CI checks them on the embedded variant.
    """

    title: str
    about: str
    plot: Callable[..., Any]
    experiments: tuple[str, ...]
    embedded: tuple[str, ...]
    checks: tuple[str, ...] = ()


_KOWAL_ARCH = ("kowal_architectures",)
_KOWAL_ARCH_EMBEDDED = ("kowal_architectures_train_embedded", "kowal_architectures_embedded")
_KOWAL_DATA = ("kowal_datasets",)
_KOWAL_DATA_EMBEDDED = ("kowal_shuffled_embedded", "kowal_datasets_embedded")

FIGURES: dict[str, Figure] = {
    "fig1": Figure(
        title="Kowal et al. CVPR'22, Fig. 1",
        about="every model (and training dataset) as a point: static against dynamic units",
        plot=fig1,
        experiments=_KOWAL_ARCH + _KOWAL_DATA,
        embedded=_KOWAL_ARCH_EMBEDDED + _KOWAL_DATA_EMBEDDED,
        checks=("static units (%), layer-wise", "dynamic units (%), layer-wise", "uninformative"),
    ),
    "fig3": Figure(
        title="Kowal et al. CVPR'22, Fig. 3",
        about="3D CNNs, SlowFast variants, transformers: layer-wise per stage, units at the last",
        plot=fig3,
        experiments=_KOWAL_ARCH,
        embedded=_KOWAL_ARCH_EMBEDDED,
        checks=(
            "(a) single-stream 3D CNNs",
            "(b) SlowFast variants",
            "units (%), layer-wise",
            "units (%), unit-wise",
            "uninformative layer",
            "joint",
            "residual",
        ),
    ),
    "fig5-left": Figure(
        title="Kowal et al. CVPR'22, Fig. 5 (left)",
        about="SlowOnly and FastOnly trained on three datasets: layer-wise at the last layer",
        plot=fig5_left,
        experiments=_KOWAL_DATA,
        embedded=_KOWAL_DATA_EMBEDDED,
        checks=("units (%), layer-wise, last layer", "dynamic", "static", "uninformative"),
    ),
    "fig5-right": Figure(
        title="Kowal et al. CVPR'22, Fig. 5 (right)",
        about="relative top-1 drop of shuffled-frame training, per model and dataset",
        plot=fig5_right,
        experiments=("kowal_shuffled",),
        embedded=("kowal_shuffled_embedded",),
        checks=("relative top-1 drop (%)", "trained on"),
    ),
    "fig6": Figure(
        title="Kowal et al. CVPR'22, Fig. 6",
        about="SlowOnly (left) and FastOnly (right) unit classes on three datasets",
        plot=fig6,
        experiments=_KOWAL_DATA,
        embedded=_KOWAL_DATA_EMBEDDED,
        checks=("units (%), unit-wise, last layer", "dynamic", "static", "joint", "residual"),
    ),
    "byvshev-fig3": Figure(
        title="Byvshev et al. CVIU'22, Fig. 3",
        about="ASDT of I3D's temporal convolutions against layer depth",
        plot=asdt_figure,
        experiments=("byvshev_weights",),
        embedded=("byvshev_weights_embedded",),
        checks=("ASDT", "layer depth (convolutions with temporal extent > 1)"),
    ),
    "byvshev-fig4": Figure(
        title="Byvshev et al. CVIU'22, Fig. 4",
        about="temporal and static output channels of I3D per layer (self-convolution)",
        plot=channels_figure,
        experiments=("byvshev_weights",),
        embedded=("byvshev_weights_embedded",),
        checks=("output channels", "temporal channels", "static channels"),
    ),
}


def get(name: str) -> Figure:
    """The registered figure ``name``; an error lists the valid names."""
    if name not in FIGURES:
        raise StbiasError(f"unknown figure {name!r}; figures: {', '.join(FIGURES)}")
    return FIGURES[name]
