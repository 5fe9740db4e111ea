"""Figures draw exactly the numbers they are given, in the papers' colours and sizes."""

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from stbias.errors import StbiasError
from stbias.metrics import score_pairs
from stbias.plotting import save_figure
from stbias.plotting.pairs import distinct_layers, fig1, fig3, fig5_left, fig6, lam_sweep
from stbias.plotting.style import COLOURS, DOUBLE, SINGLE, SOFTMAX_FLOOR
from stbias.plotting.training import fig5_right
from stbias.plotting.weights import asdt_figure, channels_figure
from stbias.results import rows_of, shuffled_drops


def _layer(rng, mix, units=20, bootstrap=0, lam=0.5):
    z1 = rng.normal(size=(300, units))
    z2 = mix * z1 + (1 - mix) * rng.normal(size=(300, units))
    entry = score_pairs(z1, z2, ["static", "dynamic"] * 150, lam=lam, bootstrap=bootstrap)
    entry.pop("unit_scores")
    return entry


def _record(model, mixes, weights="random", dataset="pfm", lam=0.5, bootstrap=0, seed=0):
    rng = np.random.default_rng(seed)
    layers = {name: _layer(rng, mix, bootstrap=bootstrap, lam=lam) for name, mix in mixes.items()}
    return {
        "task": "probe",
        "model": model,
        "weights": weights,
        "weights_sha256": None,
        "dataset": dataset,
        "stylization": "texture",
        "seed": 0,
        "lam": lam,
        "layers": layers,
    }


def _table(*records):
    rows = []
    for k, record in enumerate(records):
        rows += rows_of(record, f"/runs/{k}")
    return pd.DataFrame(rows)


def _lines(ax, factor):
    return [
        line
        for line in ax.get_lines()
        if to_hex(line.get_color()) == COLOURS[factor] and len(line.get_xdata()) > 1
    ]


def test_softmax_floor_is_the_share_of_an_uninformative_layer():
    p = np.exp([0.0, 0.0, 1.0]) / np.exp([0.0, 0.0, 1.0]).sum()
    assert SOFTMAX_FLOOR == pytest.approx(100 * p[0], rel=1e-12)
    assert round(SOFTMAX_FLOOR, 1) == 21.2


def test_fig3_draws_the_percentages_units_floor_and_colours(tmp_path):
    table = _table(
        _record("a", {"res2": 0.2, "res3": 0.5, "pool": 0.9}),
        _record("b", {"res2": 0.9, "res3": 0.1}, seed=1),
    )
    fig = fig3(table, panels={"(a) first": ["a"], "(b) second": ["b"]}, title="t")
    assert fig.get_size_inches()[0] == pytest.approx(DOUBLE)
    left_a, left_b, right = fig.axes
    assert [left_a.get_title(), left_b.get_title()] == ["(a) first", "(b) second"]
    for ax, model in ((left_a, "a"), (left_b, "b")):
        part = table[table["model"] == model]
        for factor in ("dynamic", "static"):
            (line,) = _lines(ax, factor)
            np.testing.assert_allclose(line.get_ydata(), part[f"percent_{factor}"])
        floors = [line for line in ax.get_lines() if list(line.get_ydata()) == [SOFTMAX_FLOOR] * 2]
        assert len(floors) == 1
    heights = {
        cls: [p.get_height() for p in right.patches if p.get_gid() == cls]
        for cls in ("dynamic", "static", "joint", "residual")
    }
    for k, model in enumerate(("a", "b")):
        last = table[table["model"] == model].iloc[-1]
        for cls, values in heights.items():
            assert values[k] == pytest.approx(100 * last[f"units_{cls}"] / 20)
    assert to_hex(right.patches[0].get_facecolor()) == COLOURS["dynamic"]
    legend_texts = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert any("21.2 %" in t and "uninformative" in t for t in legend_texts)
    assert "random weights" in fig._suptitle.get_text()
    paths = save_figure(fig, tmp_path / "fig3")
    assert [p[-3:] for p in paths] == ["png", "pdf"]
    assert all((tmp_path / f"fig3.{e}").stat().st_size > 5000 for e in ("png", "pdf"))


def test_a_layer_that_repeats_the_last_one_is_drawn_once():
    record = _record("a", {"res2": 0.2, "res3": 0.5})
    record["layers"]["pool"] = dict(record["layers"]["res3"])  # the global average of res3
    scores = dict(record["layers"]["pool"]["scores"])
    scores["static"] *= 1 + 1e-9  # float rounding of AdaptiveAvgPool vs mean
    record["layers"]["pool"]["scores"] = scores
    table = _table(record)
    assert list(distinct_layers(table)["layer"]) == ["res2", "res3"]
    (line,) = _lines(fig3(table).axes[0], "dynamic")
    assert len(line.get_xdata()) == 2
    # a head that changes the numbers (e.g. both pathways concatenated) keeps its layer
    other = _record("a", {"res2": 0.2, "res3": 0.5})
    other["layers"]["pool"] = _layer(np.random.default_rng(5), 0.7)
    assert list(distinct_layers(_table(other))["layer"]) == ["res2", "res3", "pool"]


def test_pathways_of_a_two_pathway_model_are_separate_series():
    record = _record("sf", {"slow_res2": 0.3, "fast_res2": 0.8, "slow_res3": 0.4, "fast_res3": 0.9})
    record["layers"]["pool"] = _layer(np.random.default_rng(3), 0.6)
    fig = fig3(_table(record), labels={"sf/slow": "SF-Slow"})
    assert [t.get_text() for t in fig.axes[-1].get_xticklabels()] == ["SF-Slow", "sf (fast)"]
    assert len(_lines(fig.axes[0], "dynamic")) == 2  # pool (both pathways) is in neither
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["res2", "res3"]


def test_bootstrap_intervals_become_error_bars():
    table = _table(_record("a", {"res2": 0.2, "res3": 0.6}, bootstrap=30))
    assert {"percent_dynamic_lo", "units_static_hi"} <= set(table.columns)
    fig = fig3(table)
    caps = [c for c in fig.axes[0].collections if c.get_segments()]
    assert len(caps) == 2  # one set of vertical bars per factor
    (segments,) = [c.get_segments() for c in caps if to_hex(c.get_color()[0]) == COLOURS["static"]]
    want = table[["percent_static_lo", "percent_static_hi"]].to_numpy()
    np.testing.assert_allclose([[s[0][1], s[1][1]] for s in segments], want)
    bars = [c for c in fig.axes[1].collections if c.get_segments()]
    assert len(bars) == 4  # the four unit classes
    assert not [c for c in fig3(_table(_record("a", {"r": 0.2}))).axes[0].collections]


def test_random_weights_are_marked_only_when_random():
    trained = _table(_record("a", {"res2": 0.5}, weights="pretrained:zoo"))
    assert fig3(trained, title="t")._suptitle.get_text() == "t"
    mixed = _table(
        _record("a", {"res2": 0.5}, weights="pretrained:zoo"), _record("b", {"res2": 0.5})
    )
    assert "* random weights" in fig3(mixed, title="t")._suptitle.get_text()


def test_lam_sweep_draws_units_per_class_against_lam():
    records = [_record("a", {"res2": 0.3, "res3": 0.6}, lam=lam) for lam in (0.3, 0.5, 0.7)]
    table = _table(*records)
    fig = lam_sweep(table)
    assert fig.get_size_inches()[0] == pytest.approx(SINGLE)
    ax = fig.axes[0]
    for cls in ("dynamic", "static", "joint", "residual"):
        (line,) = [line for line in ax.get_lines() if line.get_gid() == cls]
        assert list(line.get_xdata()) == [0.3, 0.5, 0.7]
        want = table[table["layer"] == "res3"][f"units_{cls}"] * 100 / 20
        np.testing.assert_allclose(line.get_ydata(), want)
    with pytest.raises(StbiasError, match="different metric.lam"):
        lam_sweep(_table(records[0]))


def test_dataset_grid_figures_draw_the_last_layer_of_each_run():
    records = [
        _record(m, {"res2": 0.3, "res3": mix}, dataset=d, seed=k)
        for k, (m, d, mix) in enumerate(
            [
                ("slow", "k400", 0.8),
                ("slow", "ssv2", 0.4),
                ("fast", "k400", 0.6),
                ("fast", "ssv2", 0.2),
            ]
        )
    ]
    table = _table(*records)
    order = ["fast", "slow", "ssv2", "k400"]
    fig = fig5_left(table, labels={"fast": "FastOnly"}, order=order)
    assert [ax.get_title() for ax in fig.axes] == ["FastOnly", "slow"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["ssv2", "k400"]
    got = [p.get_height() for p in fig.axes[0].patches if p.get_gid() == "fast/dynamic"]
    last = table[(table["model"] == "fast") & (table["layer"] == "res3")]
    np.testing.assert_allclose(got, last["percent_dynamic"].to_numpy()[::-1])
    fig = fig6(table, order=order)
    got = [p.get_height() for p in fig.axes[1].patches if p.get_gid() == "static"]
    last = table[(table["model"] == "slow") & (table["layer"] == "res3")]
    np.testing.assert_allclose(got, (last["units_static"] * 5).to_numpy()[::-1])
    fig = fig1(table)
    assert fig.get_size_inches()[0] == pytest.approx(SINGLE)
    points = {
        line.get_gid(): (line.get_xdata()[0], line.get_ydata()[0])
        for line in fig.axes[0].get_lines()
        if line.get_gid()
    }
    row = table[(table["model"] == "slow") & (table["dataset"] == "ssv2")].iloc[-1]
    assert points["slow::ssv2"] == pytest.approx((row["percent_static"], row["percent_dynamic"]))
    assert any(list(line.get_xdata()) == [SOFTMAX_FLOOR] for line in fig.axes[0].get_lines())


def _train(model, dataset, shuffle, acc, checksum="x"):
    return {
        "run": f"/r/{model}-{dataset}-{shuffle}",
        "task": "train",
        "model": model,
        "dataset": dataset,
        "seed": 0,
        "weights": "random",
        "shuffle_frames": shuffle,
        "val/acc": acc,
        "init_checksum": checksum,
    }


def test_shuffled_drops_pair_standard_and_shuffled_runs():
    table = pd.DataFrame(
        [
            _train("a", "x", False, 0.8),
            _train("a", "x", True, 0.2),
            _train("a", "y", False, 0.5),
            _train("a", "y", True, 0.5),
        ]
    )
    drops = shuffled_drops(table)
    assert list(drops["drop"]) == pytest.approx([0.75, 0.0])
    fig = fig5_right(table, labels={"x": "X"}, title="t")
    assert sorted(p.get_height() for p in fig.axes[0].patches) == pytest.approx([0.0, 75.0])
    assert "random initialisation" in fig.axes[0].get_title()
    bad = table.copy()
    bad.loc[1, "init_checksum"] = "other"
    with pytest.raises(StbiasError, match="different weights"):
        shuffled_drops(bad)
    with pytest.raises(StbiasError, match="1 standard and 0 shuffled"):
        shuffled_drops(table.drop(index=1))


def test_weight_figures_from_a_table():
    rows = []
    for label, checkpoint in (("init", None), ("trained", "/w/t.pt")):
        for depth in range(3):
            rows.append(
                {
                    "run": "/r",
                    "task": "weights",
                    "model": "m",
                    "weights": "file:/w/t.pt" if checkpoint else "random",
                    "weights_label": label,
                    "layer": f"l{depth}",
                    "depth": depth,
                    "asdt": 0.1 * depth + (label == "trained"),
                    "asdt_scaled": 1.0,
                    "temporal_channels": depth,
                    "channels": 4,
                }
            )
    table = pd.DataFrame(rows)
    fig = asdt_figure(table)
    assert fig.get_size_inches()[0] == pytest.approx(SINGLE)
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["m (init)", "m (trained)"]
    np.testing.assert_allclose(lines[1].get_ydata(), [1.0, 1.1, 1.2])
    assert "* random weights" in fig.axes[0].get_title()
    fig = channels_figure(table[table["weights_label"] == "init"])
    temporal = [p for p in fig.axes[0].patches if p.get_gid() == "m/temporal"]
    assert [p.get_height() for p in temporal] == [0, 1, 2]
    assert to_hex(temporal[0].get_facecolor()) == COLOURS["dynamic"]
    assert math.isclose(fig.get_size_inches()[0], SINGLE)


def test_fig3_takes_the_layers_of_results_json_as_well():
    record = _record("a", {"res2": 0.2, "res3": 0.7})
    from_mapping = fig3({"a": record["layers"]})
    (line,) = _lines(from_mapping.axes[0], "static")
    table = _table(record)
    np.testing.assert_allclose(line.get_ydata(), table["percent_static"])


# --- paper-ready files: fonts, nothing cropped, intervals, house colours, LaTeX -----------------


def _pdf_fonts(path):
    """The font subtypes a PDF file declares (``/Subtype /Type3``, ``/TrueType``, ...)."""
    import re

    data = open(path, "rb").read()
    return set(re.findall(rb"/Subtype\s*/(Type3|TrueType|CIDFontType2|Type1)", data))


def _figures():
    from stbias.plotting.explain import draw_table
    from stbias.plotting.units import unit_classes

    table = _table(_record("a", {"res2": 0.2, "res3": 0.6}, bootstrap=10))
    return {
        "fig3": fig3(table, title="λ = 0.5"),
        "units": unit_classes(table, title="units"),
        "table": draw_table(["model", "length"], [["i3d", "3.1 ± 0.2"]], title="Table 4"),
    }


def test_every_pdf_embeds_truetype_fonts_however_it_is_saved(tmp_path):
    import matplotlib

    assert matplotlib.rcParams["pdf.fonttype"] == 3  # the user's setting, left as it was
    for name, fig in _figures().items():
        fig.savefig(tmp_path / f"{name}-user.pdf")  # a user's own savefig
        own = save_figure(fig, tmp_path / name)  # the library's save
        for path in (tmp_path / f"{name}-user.pdf", own[1]):
            fonts = _pdf_fonts(path)
            assert b"Type3" not in fonts and fonts & {b"TrueType", b"CIDFontType2"}, (path, fonts)
    assert matplotlib.rcParams["pdf.fonttype"] == 3


def test_legends_below_the_axes_lie_inside_the_saved_image(tmp_path):
    from PIL import Image

    fig = fig3(_table(_record("a", {"res2": 0.2, "res3": 0.6})))
    fig.savefig(tmp_path / "user.png", dpi=100)  # no bbox argument, as a user writes it
    renderer = fig.canvas.get_renderer()
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + list(fig.legends)
    assert legends
    tight = fig.get_tightbbox(renderer)  # inches, what a tight save keeps
    outside = False
    for legend in legends:
        box = legend.get_window_extent(renderer).transformed(fig.dpi_scale_trans.inverted())
        outside |= box.y0 < 0 or box.x1 > fig.get_figwidth()  # beyond the figure's own size
        assert tight.x0 <= box.x0 and box.x1 <= tight.x1 and tight.y0 <= box.y0
        assert box.y1 <= tight.y1
    assert outside  # the case that a plain save would crop
    width, height = Image.open(tmp_path / "user.png").size
    pad = 0.03
    assert abs(width - round((tight.width + 2 * pad) * 100)) <= 2
    assert abs(height - round((tight.height + 2 * pad) * 100)) <= 2


def test_units_figure_draws_the_bootstrap_intervals_of_the_unit_counts():
    from stbias.plotting.units import unit_classes

    table = _table(_record("a", {"res2": 0.2, "res3": 0.6}, bootstrap=20))
    rows = distinct_layers(table)
    fig = unit_classes(table)
    bars = [c for c in fig.axes[0].collections if c.get_segments()]
    assert len(bars) == 4 * len(rows)  # one interval per class and layer
    first = rows.iloc[0]
    lo, hi = (100 * first[f"units_dynamic_{b}"] / first["channels"] for b in ("lo", "hi"))
    (segment,) = bars[0].get_segments()  # the dynamic class of the first layer, from 0
    np.testing.assert_allclose([segment[0][1], segment[1][1]], [lo, hi])
    assert "interval" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()][-1]
    plain = unit_classes(_table(_record("a", {"res2": 0.2})))
    assert not [c for c in plain.axes[0].collections if c.get_segments()]


def test_static_dropout_modes_take_the_house_colours():
    from stbias.plotting.static_dropout import MODE_COLOURS

    assert MODE_COLOURS["static"] == COLOURS["static"]
    assert COLOURS["dynamic"] not in MODE_COLOURS.values()  # no mode drops dynamic units
    assert all(
        to_hex(c) in {to_hex(v) for v in COLOURS.values()} | {"#7a7a7a"}
        for c in MODE_COLOURS.values()
    )


def test_latex_tables_have_booktabs_rules_and_escaped_cells():
    from stbias.plotting.latex import latex_table, markdown_cells

    text = latex_table(["model", "mask length", "λ"], [["i3d_tiny", "3.1 ± 0.2", "50 %"]])
    assert text == (
        "\\begin{tabular}{lcc}\n\\toprule\nmodel & mask length & $\\lambda$ \\\\\n\\midrule\n"
        "i3d\\_tiny & 3.1 $\\pm$ 0.2 & 50 \\% \\\\\n\\bottomrule\n\\end{tabular}\n"
    )
    header, rows = markdown_cells("| a | b |\n|---|---|\n| 1 | [0.1, 0.2] |")
    assert header == ["a", "b"] and rows == [["1", "[0.1, 0.2]"]]


def test_every_table_figure_is_also_written_as_latex(tmp_path):
    from stbias.plotting.byvshev import table2_figure

    paths = save_figure(_figures()["table"], tmp_path / "table4")
    assert paths[-1] == str(tmp_path / "table4.tex")
    tex = (tmp_path / "table4.tex").read_text()
    assert "\\caption{Table 4}" in tex and "i3d & 3.1 $\\pm$ 0.2 \\\\" in tex
    assert "\\toprule" in tex and "\\bottomrule" in tex
    rows = [{"places": 2, "motions": 2, "seed": s, "acc": a} for s, a in ((0, 0.5), (1, 0.7))]
    save_figure(table2_figure(rows, "Table 2"), tmp_path / "table2")
    tex = (tmp_path / "table2.tex").read_text()
    assert "0.60" in tex and "\\midrule" in tex  # the mean over seeds, as the Markdown shows it
    assert not save_figure(fig3(_table(_record("a", {"r": 0.2}))), tmp_path / "f")[-1].endswith(
        ".tex"
    )


IMPORT_EVERY_MODULE = """
import importlib, pkgutil, sys
import matplotlib
import pandas as pd
import stbias, stbias.plotting
for module in pkgutil.walk_packages(stbias.__path__, "stbias."):
    if not module.name.endswith("__main__"):
        importlib.import_module(module.name)
from stbias.plotting import save_figure
from stbias.plotting.pairs import fig3
fig = fig3(pd.read_pickle(sys.argv[1]), title="headless")
print(matplotlib.get_backend(), *save_figure(fig, sys.argv[2]))
"""


@pytest.mark.parametrize("backend", ["pdf", "svg"])
def test_importing_stbias_leaves_a_notebooks_matplotlib_backend_alone(tmp_path, backend):
    """Every module of stbias imports, and a figure is drawn and saved, under the backend the
    user chose (here one other than Agg, needing no display): none selects a backend itself."""
    import os
    import subprocess
    import sys

    _table(_record("i3d", {"res3": 0.2, "res4": 0.8})).to_pickle(tmp_path / "table.pkl")
    env = {**os.environ, "MPLBACKEND": backend}
    env.pop("DISPLAY", None)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            IMPORT_EVERY_MODULE,
            str(tmp_path / "table.pkl"),
            str(tmp_path / "f"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1].split() == [
        backend,
        str(tmp_path / "f.png"),
        str(tmp_path / "f.pdf"),
    ]
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "f.pdf").read_bytes()[:5] == b"%PDF-"
