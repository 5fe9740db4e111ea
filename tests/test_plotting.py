"""Figures draw exactly the numbers they are given."""

import numpy as np
import pytest

from stbias.metrics import score_pairs
from stbias.plotting import save_figure
from stbias.plotting.pairs import fig3


def _results():
    rng = np.random.default_rng(0)
    out = {}
    for model, mix in (("a", 0.2), ("b", 0.9)):
        out[model] = {}
        for layer in ("res2", "res3", "pool"):
            z1 = rng.normal(size=(300, 20))
            z2 = mix * z1 + (1 - mix) * rng.normal(size=(300, 20))
            out[model][layer] = score_pairs(z1, z2, ["static", "dynamic"] * 150)
    return out


def test_fig3_bars_are_the_percentages(tmp_path):
    results = _results()
    fig = fig3(results, title="t")
    left, right = fig.axes
    heights = [p.get_height() for p in left.patches]
    want = [
        results[m][l]["percent"][c]
        for m in results
        for l in results[m]
        for c in ("dynamic", "static", "residual")
    ]
    np.testing.assert_allclose(heights, want)
    unit_heights = [p.get_height() for p in right.patches]
    want_units = [
        100 * results[m]["pool"]["units"][c] / 20
        for m in results
        for c in ("dynamic", "static", "joint", "residual")
    ]
    np.testing.assert_allclose(unit_heights, want_units)
    paths = save_figure(fig, tmp_path / "fig3")
    assert [p[-3:] for p in paths] == ["png", "pdf"]
    assert all((tmp_path / f"fig3.{e}").stat().st_size > 5000 for e in ("png", "pdf"))


def test_fig3_unit_layer_choice():
    results = _results()
    fig = fig3(results, unit_layer="res2")
    right = fig.axes[1]
    assert right.patches[0].get_height() == pytest.approx(
        100 * results["a"]["res2"]["units"]["dynamic"] / 20
    )
