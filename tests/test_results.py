"""stbias.results.load over real run folders, and task=compare on them."""

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stbias.errors import StbiasError
from stbias.io import write_json
from stbias.metrics import score_pairs
from stbias.results import load

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "task=probe",
    "dataset=pfm",
    "dataset.split=test",
    "debug=fast",
    "probe.num_clips=8",
    "probe.bootstrap=10",
    "model.input.frames=4",
    "model.input.size=32",
    "model.input.sampling_rate=1",
]


def _run_py(cwd, *args, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A real λ × model sweep folder: python run.py -m model=c2d_tiny,i3d_tiny metric.lam=..."""
    cwd = tmp_path_factory.mktemp("sweep")
    folder = cwd / "multirun"
    proc = _run_py(
        cwd,
        "-m",
        *TINY,
        "model=c2d_tiny,i3d_tiny",
        "metric.lam=0.3,0.7",
        f"hydra.sweep.dir={folder}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder


@pytest.mark.slow
def test_load_reads_a_multirun_sweep_folder(sweep):
    table = load(sweep)
    assert (sweep / "multirun.yaml").is_file()
    assert len(table) == 4 * 4  # 4 runs x 4 layers
    assert table["run"].nunique() == 4
    assert sorted(table["model"].unique()) == ["c2d_tiny", "i3d_tiny"]
    assert sorted(table["lam"].unique()) == [0.3, 0.7]
    assert (table["lam"] == table["metric.lam"]).all()  # the sweep override as a column
    assert set(table["weights"]) == {"random"}
    assert set(table["layer"]) == {"stem", "res2", "res3", "res4"}
    for column in ("dataset", "stylization", "seed", "channels", "percent_dynamic_lo"):
        assert column in table.columns
    # every row is the run's results.json, unchanged
    for run, part in table.groupby("run"):
        record = json.loads((Path(run) / "results.json").read_text())
        for _, row in part.iterrows():
            entry = record["layers"][row["layer"]]
            assert row["percent_static"] == entry["percent"]["static"]
            assert row["units_joint"] == entry["units"]["joint"]
            assert row["scores_dynamic_hi"] == entry["ci"]["scores"]["dynamic"][1]
            assert row["channels"] == sum(
                entry["units"][c] for c in ("dynamic", "static", "joint", "residual")
            )
    # a glob, a run directory and its results.json give the same rows
    assert len(load(str(sweep / "*"))) == 16
    one = sorted(table["run"].unique())[0]
    assert len(load(one)) == 4 and len(load(os.path.join(one, "results.json"))) == 4
    assert len(load([one, one, sweep])) == 16  # each run once
    assert load(sweep, tasks=["train"]).empty


@pytest.mark.slow
def test_the_default_probe_of_the_tiny_models_repeats_no_tap(sweep):
    """head.pool of c2d_tiny / i3d_tiny only averages stages.2, which the probe's pooling does
    too: their probe_layers leave it out, so no table shows a layer twice."""
    from stbias.plotting.pairs import distinct_layers

    table = load(sweep)
    assert "pool" not in set(table["layer"])
    assert len(distinct_layers(table)) == len(table)


@pytest.mark.slow
def test_load_skips_and_counts_a_corrupt_run(sweep, tmp_path):
    copy = tmp_path / "runs"
    shutil.copytree(sweep, copy)
    (copy / "1" / "results.json").write_text('{"task": "probe", "lay')
    table = load(copy)
    assert table["run"].nunique() == 3
    assert table.attrs["skipped"] == [str(copy / "1" / "results.json")]


def test_load_says_what_is_missing(tmp_path):
    with pytest.raises(StbiasError, match="no such run directory"):
        load(tmp_path / "nowhere")
    with pytest.raises(StbiasError, match="no results.json under"):
        load(tmp_path)
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(StbiasError, match="not a results.json"):
        load(tmp_path / "x.txt")


def _fake_probe(folder, model, dataset, weights="random", seed=0):
    rng = np.random.default_rng(seed)
    layers = {}
    for name, mix in (("res2", 0.3), ("res3", 0.8)):
        z1 = rng.normal(size=(100, 16))
        z2 = mix * z1 + (1 - mix) * rng.normal(size=(100, 16))
        entry = score_pairs(z1, z2, ["static", "dynamic"] * 50)
        entry.pop("unit_scores")
        layers[name] = entry
    write_json(
        folder / "results.json",
        {
            "task": "probe",
            "model": model,
            "weights": weights,
            "weights_sha256": None,
            "dataset": dataset,
            "stylization": "texture",
            "seed": 0,
            "lam": 0.5,
            "layers": layers,
        },
    )


def test_load_gives_rows_for_weights_and_train_runs(tmp_path):
    write_json(
        tmp_path / "w" / "results.json",
        {
            "task": "weights",
            "model": "i3d_tiny",
            "run": "init",
            "checkpoint": None,
            "layers": {"stem": {"depth": 0, "kernel": [3, 5, 5], "asdt": 0.1, "channels": 16}},
            "compare": {
                "init": {
                    "checkpoint": None,
                    "layers": {"stem": {"depth": 0, "kernel": [3, 5, 5], "asdt": 0.1}},
                },
                "trained": {
                    "checkpoint": "/w/t.pt",
                    "layers": {"stem": {"depth": 0, "kernel": [3, 5, 5], "asdt": 0.2}},
                },
            },
        },
    )
    write_json(
        tmp_path / "t" / "results.json",
        {"task": "train", "model": "c2d_tiny", "dataset": "pfm", "val/acc": 0.5, "best": {}},
    )
    table = load(tmp_path)
    weights = table[table["task"] == "weights"]
    assert list(weights["weights_label"]) == ["init", "trained"]
    assert list(weights["weights"]) == ["random", "file:/w/t.pt"]
    assert list(weights["kernel"]) == ["3x5x5"] * 2
    train = table[table["task"] == "train"].iloc[0]
    assert train["val/acc"] == 0.5 and train["weights"] == "random"


def _compare(cwd, *runs):
    return _run_py(
        cwd,
        "task=compare",
        f"runs=[{','.join(str(r) for r in runs)}]",
        "hydra.run.dir=out",
        "logger=none",
    )


def test_compare_draws_models_and_datasets_side_by_side(compose, tmp_path, monkeypatch, caplog):
    from stbias.runner import run_task

    caplog.set_level(logging.INFO, logger="stbias")
    for k, (model, dataset) in enumerate([("a", "x"), ("a", "y"), ("b", "x"), ("b", "y")]):
        _fake_probe(tmp_path / "runs" / str(k), model, dataset, seed=k)
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(out)  # the run directory outside run.py
    overrides = ["task=compare", f"runs=[{tmp_path / 'runs'}]", "task.labels={a: Alpha, x: X}"]
    record, _ = run_task(compose(*overrides, "task.layer=res2"))
    assert record["task"] == "compare" and record["num_runs"] == 4
    assert sorted(record["figures"]) == ["fig3", "fig5", "fig6"]
    for name in ("fig3", "fig5", "fig6"):
        assert (out / f"{name}.png").stat().st_size > 5000
    assert json.loads((out / "results.json").read_text())["figures"] == record["figures"]
    assert len((out / "compare.csv").read_text().splitlines()) == 1 + 8
    printed = "\n".join(r.getMessage() for r in caplog.records)
    assert "a                x" in printed  # the summary: model, dataset
    # compare runs hold no measurements: loading the outputs again does not count them
    assert load(tmp_path)["run"].nunique() == 4
    with pytest.raises(StbiasError, match="unit layer 'res9' is not among the layers"):
        run_task(compose(*overrides, "task.layer=res9"))


@pytest.mark.slow
def test_compare_of_a_lam_sweep_plots_units_against_lam(sweep, tmp_path):
    proc = _compare(tmp_path, sweep)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "out" / "results.json").read_text())
    assert sorted(record["figures"]) == ["fig3", "lam_sweep"]
    assert (tmp_path / "out" / "lam_sweep.png").stat().st_size > 5000


def test_compare_needs_runs(compose, tmp_path, monkeypatch):
    from stbias.runner import run_task

    monkeypatch.chdir(tmp_path)
    with pytest.raises(StbiasError, match="task=compare needs the runs to compare: runs="):
        run_task(compose("task=compare"))
    with pytest.raises(StbiasError, match="no such run directory"):
        run_task(compose("task=compare", "runs=[nowhere]"))
