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
from stbias.plotting.weights import asdt_figure, asdt_models_figure, channels_figure
from stbias.studies import (
    bias_over_training,
    byvshev,
    manttari,
    scene_bias,
    static_dropout,
    vis,
    vos_moca,
    vos_study,
)


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
    "byvshev-fig11": Figure(
        title="Byvshev et al. CVIU'22, Fig. 11",
        about="ASDT of R(2+1)D-34, ir-CSN-152 (IG-65M, Kinetics, Sports-1M), S3D (HowTo100M)",
        plot=asdt_models_figure,
        experiments=("byvshev_fig11",),
        embedded=("byvshev_table1_train_embedded", "byvshev_fig11_embedded"),
        checks=("ASDT", "relative layer depth", "R(2+1)D-34", "ir-CSN-152"),
    ),
    "manttari-table1": Figure(
        title="Mänttäri et al. ACCV'20, Table 1",
        about="top-1 and macro F1 of I3D and ConvLSTM on clips in order and reversed",
        plot=manttari.manttari_table1,
        experiments=("manttari",),
        embedded=("manttari_embedded",),
        checks=("Top-1", "Top-1 (rev.)", "F1 (rev.)", "I3D", "C-LSTM"),
    ),
    "manttari-table2": Figure(
        title="Mänttäri et al. ACCV'20, Table 2",
        about="F1 per class of I3D and ConvLSTM on the held-out clips",
        plot=manttari.manttari_table2,
        experiments=("manttari",),
        embedded=("manttari_embedded",),
        checks=("Class", "I3D F1", "C-LSTM F1"),
    ),
    "manttari-table3": Figure(
        title="Mänttäri et al. ACCV'20, Table 3",
        about="Grad-CAM blobs per frame, blob size and distance to the centre, Welch t-tests",
        plot=manttari.manttari_table3,
        experiments=("manttari",),
        embedded=("manttari_embedded",),
        checks=(
            "Model (Dataset)",
            "Blob count",
            "Center distance",
            "Welch t-test",
            "I3D",
            "C-LSTM",
        ),
    ),
    "manttari-table4": Figure(
        title="Mänttäri et al. ACCV'20, Table 4",
        about="temporal masks (freeze): mask length, drop ratio, drop difference, t-tests",
        plot=manttari.manttari_table4,
        experiments=("manttari",),
        embedded=("manttari_embedded",),
        checks=("Model (Dataset)", "Mask length", "Welch t-test", "I3D", "C-LSTM"),
    ),
    "manttari-fig4": Figure(
        title="Mänttäri et al. ACCV'20, Fig. 4",
        about="normalised histograms of the Grad-CAM blob and temporal-mask measures per model",
        plot=manttari.manttari_fig4,
        experiments=("manttari",),
        embedded=("manttari_embedded",),
        checks=("Blob count", "Center distance", "Mask length", "Drop ratio", "density", "I3D"),
    ),
    "static-dropout": Figure(
        title="StaticDropout (Kowal et al., extended)",
        about="top-1, motion-only top-1 and dynamic units per dropout mode, intervals over seeds",
        plot=static_dropout.static_dropout_figure,
        experiments=("static_dropout",),
        embedded=("static_dropout_embedded",),
        checks=("top-1", "top-1 motion-only", "dynamic units", "none", "static", "all", "random"),
    ),
    "static-dropout-table": Figure(
        title="StaticDropout (Kowal et al., extended), table",
        about="every measure per dropout mode: mean ± half-width of the interval over seeds",
        plot=static_dropout.static_dropout_table,
        experiments=("static_dropout",),
        embedded=("static_dropout_embedded",),
        checks=("mode", "seeds", "top-1 shuffled", "drop, static zeroed", "random"),
    ),
    "bias-over-training": Figure(
        title="Bias over training (Kowal et al., extended)",
        about="layer-wise split and S_F of every checkpoint of a training run against its step",
        plot=bias_over_training.bias_over_training_figure,
        experiments=("bias_over_training_train", "bias_over_training"),
        embedded=("bias_over_training_train_embedded", "bias_over_training_embedded"),
        checks=("share of units (%)", "raw score $S_F$", "training step", "residual"),
    ),
    "vos-fig4": Figure(
        title="Kowal et al. CVPR'22, Fig. 4",
        about="two-stream segmentation per cross connection: motion, appearance, fusion layers",
        plot=vos_study.vos_fig4,
        experiments=("vos_cross_connections",),
        embedded=("vos_cross_connections_embedded",),
        checks=("none (FusionSeg-like)", "mot→app (MATNet-like)", "fusion5"),
    ),
    "vos-table1": Figure(
        title="Kowal et al. CVPR'22, Table 1",
        about="dynamic and static % of fusion layers 5 and 2 per segmentation training dataset",
        plot=vos_study.vos_table1,
        experiments=("vos_cross_connections",),
        embedded=("vos_cross_connections_embedded",),
        checks=("camouflage", "salient", "fusion5", "fusion2"),
    ),
    "vos-fig7": Figure(
        title="Kowal et al. CVPR'22, Fig. 7",
        about="unit classes of fusion layers 5 and 2 per training dataset, and center bias",
        plot=vos_study.vos_fig7,
        experiments=("vos_cross_connections",),
        embedded=("vos_cross_connections_embedded",),
        checks=("units of fusion5", "units of fusion2", "center bias", "dynamic", "static"),
    ),
    "vos-moca": Figure(
        title="Kowal et al. CVPR'22, supplement: MoCA",
        about="J of every cross connection on MoCA (camouflaged animals), all-foreground J beside",
        plot=vos_moca.vos_moca,
        experiments=("vos_cross_connections", "vos_moca"),
        embedded=("vos_cross_connections_embedded", "vos_moca_embedded"),
        checks=("all-foreground J", "none (FusionSeg-like)", "mot→app (MATNet-like)", "trained on"),
    ),
    "vis-fig5": Figure(
        title="Kowal et al., extended, Fig. 5",
        about="VisTR variants: layer-wise split of backbone, encoder, decoder; unit classes",
        plot=vis.vis_fig5,
        experiments=("vis_fig5",),
        embedded=("vis_fig5_embedded",),
        checks=(
            "backbone",
            "encoder",
            "decoder",
            "% (layer-wise)",
            "units (unit-wise)",
            "dynamic",
            "static",
            "joint",
            "residual",
        ),
    ),
    "center-bias": Figure(
        title="Kowal et al. CVPR'22, Fig. 7 (right)",
        about="center bias of segmentation datasets: the mean foreground mask, scaled to [0, 1]",
        plot=vos_study.center_bias_figure,
        experiments=("center_bias",),
        embedded=("center_bias_embedded",),
        checks=("center mass", "camouflage", "salient"),
    ),
    "byvshev-table1": Figure(
        title="Byvshev et al. CVIU'22, Table 1",
        about="BrushMNIST error breakdown (normal, footprint training) and reversed-frame accuracy",
        plot=byvshev.byvshev_table1,
        experiments=("byvshev_table1_train", "byvshev_table1_test"),
        embedded=("byvshev_table1_train_embedded", "byvshev_table1_test_embedded"),
        checks=("(a) errors, normal clips", "(b) errors, footprints", "(c) frame order", "paper"),
    ),
    "byvshev-table2": Figure(
        title="Byvshev et al. CVIU'22, Table 2",
        about="P+F+M accuracy over place classes (rows) and motion classes (columns)",
        plot=byvshev.byvshev_table2,
        experiments=("byvshev_table2",),
        embedded=("byvshev_table2_embedded",),
        checks=("motion classes (M)", "place classes (A)"),
    ),
    "byvshev-appendix-a": Figure(
        title="Byvshev et al. CVIU'22, Appendix A",
        about="scene bias: common place scores (Fig. A.12), common vs rare places, static probes",
        plot=scene_bias.appendix_a,
        experiments=("byvshev_appendix_a",),
        embedded=("byvshev_appendix_a_embedded",),
        checks=(
            "(a) Fig. A.12, common place score",
            "(b) Table A.3, common vs rare places",
            "(c) Table A.4, places on static clips",
            "videos with score ≥ x (%)",
            "paper",
        ),
    ),
    "byvshev-table-a3": Figure(
        title="Byvshev et al. CVIU'22, Table A.3",
        about="the action model's accuracy on videos of common vs rare places, with their counts",
        plot=scene_bias.table_a3_target,
        experiments=("byvshev_appendix_a",),
        embedded=("byvshev_appendix_a_embedded",),
        checks=("group", "common", "rare", "accuracy (%)", "paper: videos"),
    ),
    "byvshev-table-a4": Figure(
        title="Byvshev et al. CVIU'22, Table A.4",
        about="places top-1: video models on static clips against 2D models, fixed or fine-tuned",
        plot=scene_bias.table_a4_target,
        experiments=("byvshev_appendix_a",),
        embedded=("byvshev_appendix_a_embedded",),
        checks=("model", "fixed weights", "top-1 (%)", "paper: I3D (3D)"),
    ),
}


def get(name: str) -> Figure:
    """The registered figure ``name``; an error lists the valid names."""
    if name not in FIGURES:
        raise StbiasError(f"unknown figure {name!r}; figures: {', '.join(FIGURES)}")
    return FIGURES[name]
