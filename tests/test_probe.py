"""The probe end to end: composed configs, known answers, cache, resume, DDP, outputs, W&B."""

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import read_wandb_run

from stbias.lit.probe import ProbeModule
from stbias.runner import run_task

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "model=i3d_tiny",
    "probe.num_clips=8",
    "probe.batch_size=4",
    "logger=none",
    "trainer.enable_progress_bar=false",
]


def probe(compose, tmp_path, monkeypatch, *overrides, out="run"):
    folder = tmp_path / out
    folder.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(folder)
    cache = f"probe.cache_dir={tmp_path / 'cache'}"
    record, _ = run_task(compose(*SMALL, cache, *overrides, run_dir=folder))
    return record, folder


def numbers(record):
    return {
        layer: (e["scores"], e["dims"], e["units"], e["n_pairs"])
        for layer, e in record["layers"].items()
    }


def test_pool_is_left_out_by_default_and_probed_by_name_as_the_last_stage(
    compose, tmp_path, monkeypatch
):
    """i3d_tiny's head.pool only averages res4: by name it gives res4's numbers exactly, which
    is why its probe_layers leave it out of the default table."""
    record, _ = probe(compose, tmp_path, monkeypatch, "probe.layers=[res4,pool]", out="named")
    assert list(record["layers"]) == ["res4", "pool"]
    res4, pool = record["layers"]["res4"], record["layers"]["pool"]
    assert pool["units"] == res4["units"] and pool["dims"] == res4["dims"]
    assert pool["scores"] == pytest.approx(res4["scores"], rel=1e-6)


def test_outputs_follow_the_documented_layout(compose, tmp_path, monkeypatch):
    record, folder = probe(compose, tmp_path, monkeypatch)
    stored = json.loads((folder / "results.json").read_text())
    assert stored["task"] == "probe" and stored["model"] == "i3d_tiny"
    assert stored["dataset"] == "pfm" and stored["stylization"] == "texture"
    assert stored["num_clips"] == 8 and stored["skipped_clips"] == 0
    assert list(stored["layers"]) == ["stem", "res2", "res3", "res4"]
    for entry in stored["layers"].values():
        assert set(entry) >= {"scores", "dims", "percent", "lam", "units", "n_pairs"}
        assert entry["n_pairs"] == {"dynamic": 8, "static": 8}
        assert sum(entry["dims"].values()) == sum(
            entry["units"][c] for c in ("dynamic", "static", "joint", "residual")
        )
    assert stored["environment"]["packages"]["torch"]
    rows = (folder / "results.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith(
        "model,dataset,stylization,seed,weights,weights_sha256,layer"
    )
    with np.load(folder / "unit_scores.npz") as npz:
        assert sorted(npz.files) == sorted(
            f"{l}/{f}" for l in stored["layers"] for f in ("dynamic", "static")
        )
        assert npz["res3/static"].shape == (64,)
    for ext in ("png", "pdf"):
        assert (folder / f"units.{ext}").stat().st_size > 5000  # metric=unitwise, the default
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp")]


def test_frame_order_blind_model_has_no_dynamic_units(compose, tmp_path, monkeypatch):
    c2d, c2d_dir = probe(compose, tmp_path, monkeypatch, "model=c2d_tiny", out="c2d")
    i3d, _ = probe(compose, tmp_path, monkeypatch, "model=i3d_tiny", out="i3d")
    with np.load(c2d_dir / "unit_scores.npz") as npz:
        for layer in c2d["layers"]:
            live = npz[f"{layer}/static"] != 0
            # shuffled frames give c2d_tiny identical pooled features: s_static = 1
            np.testing.assert_allclose(npz[f"{layer}/static"][live], 1.0, atol=1e-4)
    for layer, entry in c2d["layers"].items():
        assert entry["units"]["dynamic"] == 0, layer
        assert entry["scores"]["static"] > entry["scores"]["dynamic"]
    # i3d_tiny sees frame order: shuffling changes its features
    assert min(e["scores"]["static"] for e in i3d["layers"].values()) < min(
        e["scores"]["static"] for e in c2d["layers"].values()
    )


def test_custom_model_with_undeclared_channels(compose, tmp_path, monkeypatch):
    record, _ = probe(
        compose,
        tmp_path,
        monkeypatch,
        "model=custom",
        "model.builder.constructor=stbias.models.tiny.c2d_tiny",
        "model.layers={mid: stages.1, last: head.pool}",
        "model.input.frames=16",
        "model.input.size=64",
        out="custom",
    )
    assert list(record["layers"]) == ["mid", "last"]
    assert sum(record["layers"]["mid"]["dims"].values()) == 64  # inferred from one forward pass
    assert record["layers"]["last"]["units"]["dynamic"] == 0


def test_lambda_sweep_and_layer_subsets_reuse_the_cached_statistics(compose, tmp_path, monkeypatch):
    first, _ = probe(compose, tmp_path, monkeypatch, "metric.lam=0.5", out="a")
    assert first["cache"]["clips_run"] == 8 and first["cache"]["layers_from_cache"] == []
    again, _ = probe(
        compose, tmp_path, monkeypatch, "metric.lam=0.9", "probe.layers=[res3]", out="b"
    )
    assert again["cache"]["clips_run"] == 0 and again["cache"]["layers_from_cache"] == ["res3"]
    assert list(again["layers"]) == ["res3"]
    assert again["layers"]["res3"]["scores"] == first["layers"]["res3"]["scores"]
    fresh, _ = probe(
        compose,
        tmp_path,
        monkeypatch,
        "metric.lam=0.9",
        "probe.cache_dir=" + str(tmp_path / "other"),
        out="c",
    )
    assert fresh["cache"]["clips_run"] == 8
    assert again["layers"]["res3"]["units"] == fresh["layers"]["res3"]["units"]
    changed, _ = probe(compose, tmp_path, monkeypatch, "seed=1", out="d")
    assert changed["cache"]["clips_run"] == 8  # the seed changes styles and shuffles


def test_interrupted_probe_resumes_to_the_same_numbers(compose, tmp_path, monkeypatch):
    whole, _ = probe(
        compose,
        tmp_path,
        monkeypatch,
        "probe.num_clips=12",
        "probe.batch_size=2",
        f"probe.cache_dir={tmp_path / 'whole'}",
        out="whole",
    )
    original = ProbeModule.test_step

    def interrupted(self, batch, batch_idx):
        if batch_idx == 3:
            raise KeyboardInterrupt("simulated interruption")
        return original(self, batch, batch_idx)

    args = ["probe.num_clips=12", "probe.batch_size=2", "probe.save_every=2"]
    monkeypatch.setattr(ProbeModule, "test_step", interrupted)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        probe(compose, tmp_path, monkeypatch, *args, out="broken")
    partial = list((tmp_path / "cache").rglob("partial-rank0-of1.pt"))
    assert len(partial) == 1
    monkeypatch.setattr(ProbeModule, "test_step", original)
    resumed, _ = probe(compose, tmp_path, monkeypatch, *args, out="resumed")
    assert resumed["cache"]["clips_run"] == 8  # 4 of 12 clips came from the saved sums
    for layer, entry in whole["layers"].items():
        assert resumed["layers"][layer]["units"] == entry["units"]
        for factor, value in entry["scores"].items():
            assert resumed["layers"][layer]["scores"][factor] == pytest.approx(value, rel=1e-12)
    assert not list((tmp_path / "cache").rglob("partial-*.pt"))


def test_wandb_offline_run_holds_the_logged_numbers(compose, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    record, folder = probe(compose, tmp_path, monkeypatch, "logger=wandb", out="wb")
    stored = read_wandb_run(folder)
    assert stored["run"]["display_name"] == "probe-i3d_tiny-pfm"
    assert stored["run"]["run_group"] == "probe-i3d_tiny-pfm"
    assert set(stored["run"]["tags"]) == {"probe", "i3d_tiny", "pfm"}
    summary = stored["summary"]
    for layer, entry in record["layers"].items():
        assert summary[f"probe/dynamic_pct/{layer}"] == entry["percent"]["dynamic"]
        assert summary[f"probe/static_score/{layer}"] == pytest.approx(
            entry["scores"]["static"], rel=1e-12
        )
        assert summary[f"probe/joint_units/{layer}"] == entry["units"]["joint"]
    table = stored["tables"]["probe/results"]
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    assert [r["layer"] for r in rows] == list(record["layers"])
    assert rows[0]["units_static"] == record["layers"][rows[0]["layer"]]["units"]["static"]
    assert list(folder.glob("wandb/offline-run-*/files/media/images/probe/figure*.png"))


def _run_py(tmp_path, *args, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_missing_dataset_root_stops_with_one_clear_message(tmp_path):
    proc = _run_py(
        tmp_path, "model=i3d", "dataset=ssv2", "metric=unitwise", "logger=none", timeout=120
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "dataset.root" in proc.stderr and "ssv2" in proc.stderr.lower()


@pytest.mark.slow
def test_multirun_lambda_sweep_runs_the_model_once(tmp_path):
    proc = _run_py(
        tmp_path,
        "-m",
        "metric.lam=0.1,0.5,0.9",
        *SMALL,
        f"probe.cache_dir={tmp_path / 'c'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = [
        json.loads((tmp_path / "sweep" / str(i) / "results.json").read_text()) for i in range(3)
    ]
    assert [j["cache"]["clips_run"] for j in jobs] == [8, 0, 0]
    # each point says which it is, and whether its statistics came from the cache
    for k, lam in enumerate(("0.1", "0.5", "0.9")):
        assert f"[{k + 1}/3] metric.lam={lam}\n" in proc.stdout
    assert proc.stdout.count("(no forward pass)") == 2
    assert [j["lam"] for j in jobs] == [0.1, 0.5, 0.9]
    joint = [
        j["layers"]["res3"]["units"]["joint"] + j["layers"]["res3"]["units"]["static"] for j in jobs
    ]
    assert joint[0] >= joint[1] >= joint[2]


@pytest.mark.slow
def test_two_ddp_processes_give_the_numbers_of_one(tmp_path):
    args = [
        "model=i3d_tiny",
        "probe.num_clips=10",
        "probe.batch_size=1",
        "logger=none",
        "trainer.enable_progress_bar=false",
    ]
    one = _run_py(
        tmp_path, *args, f"probe.cache_dir={tmp_path / 'c1'}", f"hydra.run.dir={tmp_path / 'one'}"
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = _run_py(
        tmp_path,
        *args,
        "trainer=ddp_cpu",
        f"probe.cache_dir={tmp_path / 'c2'}",
        f"hydra.run.dir={tmp_path / 'two'}",
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a = json.loads((tmp_path / "one" / "results.json").read_text())
    b = json.loads((tmp_path / "two" / "results.json").read_text())
    assert b["config"]["trainer"]["devices"] == 2 and b["config"]["trainer"]["strategy"] == "ddp"
    for layer, entry in a["layers"].items():
        other = b["layers"][layer]
        assert other["units"] == entry["units"] and other["dims"] == entry["dims"]
        assert other["n_pairs"] == entry["n_pairs"] == {"dynamic": 10, "static": 10}
        for factor, value in entry["scores"].items():
            assert other["scores"][factor] == pytest.approx(value, rel=1e-9)


def test_clip_sampling_is_seeded_and_stratified_by_label(tmp_path):
    import fixtures

    from stbias.data import kinetics
    from stbias.data.subsets import choose_clips, clip_info

    root = fixtures.kinetics(tmp_path / "k400", per_class=3)  # the CSV is sorted by label
    data = kinetics(str(root), "train", num_frames=2, size=32)
    labels = [clip_info(data, i)["label"] for i in range(len(data))]
    assert labels == sorted(labels)
    first = choose_clips(data, 4, "first", 0)
    assert first == [0, 1, 2, 3] and len({labels[i] for i in first}) == 2
    strat = choose_clips(data, 4, "stratified", 0)
    assert sorted(labels[i] for i in strat) == [0, 1, 2, 3]  # one clip of each class
    assert choose_clips(data, 4, "stratified", 0) == strat  # seeded
    rand = choose_clips(data, 6, "random", 0)
    assert rand == sorted(set(rand)) and rand != choose_clips(data, 6, "random", 1)
    assert choose_clips(data, None, "stratified", 0) == list(range(12))


def test_the_clips_used_and_the_weights_are_written_beside_the_results(
    compose, tmp_path, monkeypatch, caplog
):
    record, folder = probe(compose, tmp_path, monkeypatch, "probe.sampling=random")
    rows = (folder / "clips.csv").read_text().splitlines()
    assert rows[0] == "index,id,label" and len(rows) == 1 + record["num_clips"]
    assert record["weights"] == "random" and record["weights_sha256"] is None
    assert "weights" in (folder / "results.csv").read_text().splitlines()[0]
    warnings = [
        r
        for r in caplog.records
        if "random weights" in r.getMessage() and r.levelno >= logging.WARNING
    ]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


def test_layerwise_and_unitwise_report_and_draw_different_things(
    compose, tmp_path, monkeypatch, caplog
):
    caplog.set_level("INFO")
    unit, unit_dir = probe(compose, tmp_path, monkeypatch, "metric=unitwise", out="u")
    unit_out, _ = caplog.text, caplog.clear()
    layer, layer_dir = probe(compose, tmp_path, monkeypatch, "metric=layerwise", out="l")
    layer_out = caplog.text
    assert unit["layers"] == layer["layers"]  # both computed, from the same cached sums
    assert "units   dyn  stat joint" in unit_out and "S_dyn  S_stat   dyn%" not in unit_out
    assert "S_dyn  S_stat   dyn%" in layer_out and "units   dyn  stat joint" not in layer_out
    assert (unit_dir / "units.png").exists() and not (unit_dir / "fig3.png").exists()
    assert (layer_dir / "fig3.png").exists() and not (layer_dir / "units.png").exists()


def test_grey_clips_are_repeated_for_an_rgb_model(compose, tmp_path, monkeypatch):
    record, _ = probe(compose, tmp_path, monkeypatch, "dataset=brushmnist_small")
    assert record["config"]["model"]["input"]["channels"] == 3
    assert record["layers"]["res4"]["n_pairs"] == {"dynamic": 8, "static": 8}


NOISE = (
    "GPU available",
    "TPU available",
    "Tip:",
    "LeafSpec",
    "Deprecat",
    "wandb: Run summary",
    "wandb: Run history",
    "wandb: Tracking run",
    "anonymous setting",
    "UserWarning",
    "Images sizes do not match",
    "Glyph names",  # fontTools subsetting the PDF fonts
)


@pytest.mark.slow
def test_the_terminal_shows_the_header_a_bar_the_table_and_no_noise(tmp_path):
    done = _run_py(
        tmp_path,
        "model=i3d_tiny",
        "probe.num_clips=4",
        "probe.batch_size=2",
        f"probe.cache_dir={tmp_path / 'c'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    shown = done.stdout + done.stderr
    for noise in NOISE:
        assert noise not in shown, noise
    assert "probe: i3d_tiny (random weights) | pfm, split train: 4 of 2000 clips" in done.stdout
    assert "probing i3d_tiny: 100%" in done.stderr  # one bar for the phase, with its ETA
    assert "layer           units   dyn  stat joint" in done.stdout
    assert re.search(r"W&B: offline run in \S+ \(upload: wandb sync \S+\)", done.stdout)
    logged = (tmp_path / "run" / "stbias.log").read_text()
    assert "layer           units   dyn  stat joint" in logged and "random weights" in logged
    verbose = _run_py(
        tmp_path,
        "model=i3d_tiny",
        "probe.num_clips=4",
        "probe.batch_size=2",
        "logger=none",
        "verbose=true",
        f"probe.cache_dir={tmp_path / 'c2'}",
        f"hydra.run.dir={tmp_path / 'run2'}",
    )
    assert "GPU available" in verbose.stdout + verbose.stderr  # the rest, on request


def test_stylizing_in_the_loaders_workers_gives_the_same_numbers(compose, tmp_path, monkeypatch):
    tiny = ["model.input.size=32", "model.input.frames=4", "probe.num_clips=6"]
    on_device, _ = probe(compose, tmp_path, monkeypatch, *tiny, out="device")
    rendered = []  # whether each step's batch came with its views
    step = ProbeModule.test_step

    def test_step(module, batch, batch_idx):
        rendered.append("views" in batch)
        return step(module, batch, batch_idx)

    monkeypatch.setattr(ProbeModule, "test_step", test_step)
    in_loader, _ = probe(
        compose,
        tmp_path,
        monkeypatch,
        *tiny,
        "probe.stylize_on=loader",
        "probe.num_workers=1",
        f"probe.cache_dir={tmp_path / 'other_cache'}",  # computed again, not read back
        out="loader",
    )
    assert in_loader["cache"]["clips_run"] == 6 and rendered == [True, True]
    assert in_loader["config"]["probe"]["stylize_on"] == "loader"
    assert numbers(in_loader) == numbers(on_device)
    for layer, entry in on_device["layers"].items():
        assert in_loader["layers"][layer]["scores"] == entry["scores"]  # bit for bit


def test_where_the_views_are_rendered():
    from stbias.errors import StbiasError
    from stbias.lit.probe import resolve_stylize_on

    assert resolve_stylize_on("auto", "cpu", 1) == "loader"  # beside the forward pass
    assert resolve_stylize_on("auto", "cpu", 0) == "device"  # no workers to put them in
    assert resolve_stylize_on("auto", "cuda", 8) == "device"  # the accelerator is faster
    assert resolve_stylize_on("loader", "cuda", 8) == "loader"
    assert resolve_stylize_on("device", "cpu", 2) == "device"
    with pytest.raises(StbiasError, match="unknown probe.stylize_on 'gpu'; valid: auto, device"):
        resolve_stylize_on("gpu", "cpu", 1)


def test_the_cache_key_ignores_loading_speed_settings(compose, tmp_path):
    from stbias.tasks.probe import cache_key

    def key(*overrides):
        base = ("dataset=video_folder", f"dataset.root={tmp_path}")
        cache = f"probe.cache_dir={tmp_path / 'cache'}"
        return cache_key(compose(*SMALL, cache, *base, *overrides, run_dir=tmp_path))

    default = key()
    for speed in ("dataset.num_workers=3", "dataset.decode_threads=2", "dataset.prefetch_factor=4"):
        assert key(speed) == default, speed
    assert key("dataset.pin_memory=true", "probe.stylize_on=device") == default
    assert key("dataset.backend=pyav") != default  # another decoder: computed again
    assert key("dataset.crop=random") != default


def test_publish_logs_a_finished_study_run_through_the_configured_logger(tmp_path):
    """Every study ends with ``publish``: the logger its config names gets the summary."""
    import csv

    from omegaconf import OmegaConf

    from stbias.tasks.loggers import publish

    (tmp_path / "results.json").write_text("{}")
    logger_cfg = OmegaConf.load(Path(__file__).parents[1] / "stbias/conf/logger/csv.yaml")
    publish(logger_cfg, str(tmp_path), "vos_moca", "twostream_seg", "moca", summary={"J": 0.25})
    rows = list(csv.DictReader(open(next((tmp_path / "csv").rglob("metrics.csv")))))
    assert [float(r["J"]) for r in rows if r.get("J")] == [0.25]
    none = OmegaConf.load(Path(__file__).parents[1] / "stbias/conf/logger/none.yaml")
    publish(none, str(tmp_path / "quiet"), "vos_moca", "twostream_seg", "moca", summary={"J": 1})
    assert not (tmp_path / "quiet").exists()  # logger=none writes nothing
