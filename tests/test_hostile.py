"""What a hostile user tries, as tables: each case, what it runs and the class of answer expected.

Classes of answer:

* ``REFUSED``: one line naming the bad value and what is valid, before any work (in-process:
  :func:`stbias.validation.validate` raises; the subprocess cases check exit 2 and one line);
* ``STOPS``: the run stops with one line once a NaN or infinite number appears, nothing written;
* ``SKIPS``: unreadable input (videos, run folders) is left out with one warning line naming it
  and counted; the rest runs;
* ``RECOMPUTES``: a cache entry that cannot be read is computed again, naming the file;
* ``WORKS``: the documented form works;
* ``TYPE_ERROR`` / ``VALUE_ERROR``: the Python API raises that class, naming the argument.

The next surface added is tried the same way: add its rows here.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config
from hydra.core.hydra_config import HydraConfig

from stbias.errors import StbiasError
from stbias.runner import run_task
from stbias.validation import validate

ROOT = Path(__file__).resolve().parents[1]
REFUSED, STOPS, SKIPS, RECOMPUTES, WORKS = "refused", "stops", "skips", "recomputes", "works"
TYPE_ERROR, VALUE_ERROR = "TypeError", "ValueError"


@dataclass(frozen=True)
class Case:
    """One hostile try: a name, what it runs, the class of answer and the text it must show."""

    name: str
    command: tuple[str, ...]
    expected: str
    match: str = ""


def one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text.strip(), text
    assert "Traceback" not in text
    return text


# --- settings: refused at compose/validation time ----------------------------------------------

EXPLAIN = ("model=i3d_tiny", "dataset=brushmnist_small")
SETTINGS = [
    Case("lr nan", ("metric=temporal_mask", "metric.lr=nan"), REFUSED, "metric.lr=nan"),
    Case("l1 nan", ("metric=temporal_mask", "metric.l1=nan"), REFUSED, "metric.l1=nan"),
    Case("tv inf", ("metric=temporal_mask", "metric.tv=inf"), REFUSED, "metric.tv=inf"),
    Case("beta zero", ("metric=temporal_mask", "metric.beta=0"), REFUSED, "metric.beta=0"),
    Case("iterations abc", ("metric=temporal_mask", "metric.iterations=abc"), REFUSED, "abc"),
    Case("perturbation", ("metric=temporal_mask", "metric.perturbation=melt"), REFUSED, "freeze"),
    Case(
        "std nan",
        ("model.input.std=[nan,0.2,0.2]",),
        REFUSED,
        r"model.input.std=\[nan, 0.2, 0.2\] is not valid; model.input.std takes a list of finite",
    ),
    Case("mean inf", ("model.input.mean=[inf,0.4,0.4]",), REFUSED, "model.input.mean"),
    Case("fps zero", ("metric=gradcam", "metric.fps=0"), REFUSED, "metric.fps=0"),
    Case("batch zero", ("metric=gradcam", "probe.batch_size=0"), REFUSED, "probe.batch_size=0"),
    Case("batch zero tm", ("metric=temporal_mask", "probe.batch_size=0"), REFUSED, "batch_size"),
    Case("eps abc", ("metric=gradcam", "metric.eps=abc"), REFUSED, "metric.eps='abc'"),
    Case("eps negative", ("metric=gradcam", "metric.eps=-1"), REFUSED, "metric.eps=-1"),
    Case("normalize", ("metric=gradcam", "metric.normalize=max"), REFUSED, "frame, clip, none"),
    Case("grid abc", ("metric=gradcam", "metric.grid=abc"), REFUSED, "metric.grid='abc'"),
    Case("grid two", ("metric=gradcam", "metric.grid=[2,2]"), REFUSED, "three integers"),
    Case("blobs abc", ("metric=gradcam", "metric.blobs=abc"), REFUSED, "metric.blobs='abc'"),
    Case("label_key", ("metric=temporal_mask", "metric.label_key=''"), REFUSED, "label_key"),
    Case("num_clips zero", ("metric=gradcam", "probe.num_clips=0"), REFUSED, "^probe.num_clips"),
    Case("num_clips abc", ("metric=temporal_mask", "probe.num_clips=abc"), REFUSED, "^probe."),
    Case("lam nan", ("metric.lam=nan",), REFUSED, "metric.lam=nan"),
    Case(
        "unknown static dropout key",
        ("task=train", "+train.static_dropout.foo=1"),
        REFUSED,
        "train.static_dropout.foo is not a setting; train.static_dropout takes p, layer",
    ),
    Case("dropout p nan", ("task=train", "train.static_dropout.p=nan"), REFUSED, "p=nan"),
    Case("optimizer lr nan", ("task=train", "train.optimizer.lr=nan"), REFUSED, "lr=nan"),
    Case("any nan", ("trainer.gradient_clip_val=nan",), REFUSED, "gradient_clip_val=nan"),
    Case("roots list", ("task=center_bias", "task.roots=[a]"), REFUSED, "task.roots"),
]


@pytest.mark.parametrize("case", SETTINGS, ids=lambda c: c.name)
def test_settings(compose, case):
    cfg = compose(*EXPLAIN, *case.command)
    assert case.expected == REFUSED
    with pytest.raises(StbiasError, match=case.match) as err:
        validate(cfg)
    one_line(err.value)


def test_every_packaged_default_passes_the_checks(compose):
    validate(compose())
    for metric in ("temporal_mask", "gradcam", "asdt", "layerwise"):
        validate(compose(*EXPLAIN, f"metric={metric}"))
    validate(compose("task=train", *EXPLAIN))
    # the paper experiments too, their `???` paths unset (the tasks report those themselves)
    for path in sorted((ROOT / "conf" / "experiment").glob("**/*.yaml")):
        name = path.relative_to(ROOT / "conf" / "experiment").with_suffix("").as_posix()
        validate(compose(f"experiment={name}"))


def _run_py(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.mark.parametrize(
    "case",
    [
        Case("lr nan", ("metric=temporal_mask", "metric.lr=nan"), REFUSED, "metric.lr=nan"),
        Case("static dropout key", ("task=train", "+train.static_dropout.foo=1"), REFUSED, "foo"),
    ],
    ids=lambda c: c.name,
)
def test_settings_from_the_command_line_exit_2_with_one_line(case, tmp_path):
    proc = _run_py(tmp_path, *EXPLAIN, *case.command, "logger=none", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("stbias: error: "), proc.stderr
    assert case.match in lines[0]
    assert not (tmp_path / "results.json").exists()


# --- the tasks, in-process ---------------------------------------------------------------------

SMALL = [
    "model=i3d_tiny",
    "model.input.frames=8",
    "model.input.size=32",
    "logger=none",
    "trainer.enable_progress_bar=false",
]


NAMES = ["a", "b", "corrupt", "c", "empty", "d", "zero", "e"]


@pytest.fixture(scope="module")
def broken_folder(tmp_path_factory) -> Path:
    """A video folder: five real videos between a corrupt, a truncated and a zero-byte file."""
    import fixtures

    root = tmp_path_factory.mktemp("videos")
    rows = ["path,label"]
    for i, name in enumerate(NAMES):
        path = root / f"{name}.mp4"
        if name == "corrupt":
            path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
        elif name == "empty":  # a real file cut after its first bytes
            fixtures.write_video(path, n=10, width=40, height=32, seed=i)
            path.write_bytes(path.read_bytes()[:200])
        elif name == "zero":
            path.write_bytes(b"")
        else:
            fixtures.write_video(path, n=12, width=40, height=32, seed=i)
        rows.append(f"{name}.mp4,{'xy'[i % 2]}")
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    return root


READABLE = ["a", "b", "c", "d", "e"]
IN_PROCESS, WORKER = "dataset.num_workers=0", "dataset.num_workers=1"
BROKEN = [
    Case(
        "temporal masks",
        ("metric=temporal_mask", "metric.iterations=2", "probe.batch_size=3", "metric.figures=1"),
        SKIPS,
    ),
    Case("gradcam", ("metric=gradcam", "probe.batch_size=3", "metric.figures=1"), SKIPS),
    Case("test", ("task=test", "task.split=train", "probe.batch_size=3"), SKIPS),
    # the reader warns in the process that decodes: here, so that the test sees the warnings
    Case("probe", ("task=probe", "probe.num_clips=null", "probe.batch_size=3", IN_PROCESS), SKIPS),
    # views rendered in a loader worker (the CPU default with workers): the same answer
    Case(
        "probe, views in the loader",
        (
            "task=probe",
            "probe.num_clips=null",
            "probe.batch_size=3",
            WORKER,
            "probe.stylize_on=loader",
        ),
        SKIPS,
    ),
]


@pytest.mark.parametrize("case", BROKEN, ids=lambda c: c.name)
def test_unreadable_videos_are_skipped_and_counted_never_replaced(
    compose, case, broken_folder, tmp_path, caplog
):
    cfg = compose(
        *SMALL,
        "dataset=video_folder",
        f"dataset.root={broken_folder}",
        "model.builder.num_classes=2",
        *case.command,
        *(["probe.num_clips=null"] if case.command[0].startswith("metric=") else []),
        f"probe.cache_dir={tmp_path / 'cache'}",
        run_dir=tmp_path,
    )
    with caplog.at_level(logging.WARNING):
        record, _ = run_task(cfg)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["skipped_clips"] == record["skipped_clips"] == 3
    kind = case.command[0]
    if kind == "task=probe":  # num_clips: the clips drawn; pairs: the clips read
        assert saved["num_clips"] == len(NAMES)
        for entry in saved["layers"].values():
            assert entry["n_pairs"] == {"dynamic": len(READABLE), "static": len(READABLE)}
    elif kind == "task=test":
        import csv

        assert saved["num_clips"] == len(READABLE)

        with open(tmp_path / "predictions.csv") as fh:
            rows = list(csv.DictReader(fh))
        assert [r["id"] for r in rows] == READABLE
        assert [int(r["index"]) for r in rows] == [NAMES.index(n) for n in READABLE]
    else:
        assert saved["num_clips"] == len(READABLE)
        rows = saved["clips"]
        assert [r["id"] for r in rows] == READABLE
        assert [r["index"] for r in rows] == [NAMES.index(n) for n in READABLE]
        # no row is a copy of another (the replaced samples used to duplicate their neighbour)
        key = "mask" if "mask" in rows[0] else "blob_counts"
        numbers = [(r["os"] if "os" in r else r["score"], r[key]) for r in rows]
        assert len(set(numbers)) == len(numbers)
    if WORKER in case.command:  # a worker's warnings go to its own handlers, not caplog's
        return
    warned = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    for name in ("corrupt", "empty", "zero"):
        assert sum(f"{name}.mp4" in m for m in warned) == 1, warned


def test_a_folder_of_only_unreadable_videos_stops_with_one_line(compose, broken_folder, tmp_path):
    only = tmp_path / "only"
    only.mkdir()
    for name in ("corrupt", "zero"):
        shutil.copy(broken_folder / f"{name}.mp4", only)
    (only / "train.csv").write_text("path,label\ncorrupt.mp4,x\nzero.mp4,y\n")
    cfg = compose(
        *SMALL,
        "dataset=video_folder",
        f"dataset.root={only}",
        "metric=gradcam",
        "probe.num_clips=null",
        run_dir=tmp_path / "run",
    )
    with pytest.raises(StbiasError, match="could not be read|none of the clips") as err:
        run_task(cfg)
    one_line(err.value)
    assert not (tmp_path / "run" / "results.json").exists()


@pytest.fixture(scope="module")
def nan_weights(tmp_path_factory) -> dict[str, Path]:
    """i3d_tiny weights that give NaN everywhere (RGB, and grey for training on BrushMNIST), and
    weights whose res4 stage is dead (zero)."""
    from stbias.models.tiny import i3d_tiny

    folder = tmp_path_factory.mktemp("weights")
    files = {}
    for name, channels in (("nan", 3), ("grey", 1)):
        state = i3d_tiny(num_classes=100, in_channels=channels, dropout=0.0).state_dict()
        nan = {
            k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
            for k, v in state.items()
        }
        files[name] = folder / f"{name}.pt"
        torch.save(nan, files[name])
    state = i3d_tiny(num_classes=100, in_channels=3, dropout=0.0).state_dict()
    dead = {
        k: torch.zeros_like(v) if k.startswith("stages.2") and v.is_floating_point() else v
        for k, v in state.items()
    }
    files["dead"] = folder / "dead.pt"
    torch.save(dead, files["dead"])
    return files


NAN_OUTPUTS = [
    Case("probe", ("task=probe", "probe.num_clips=4"), STOPS, "gave NaN or infinite features"),
    Case(
        "temporal masks",
        ("metric=temporal_mask", "probe.num_clips=4", "metric.iterations=2"),
        STOPS,
        "temporal-mask search gave NaN",
    ),
    Case("gradcam", ("metric=gradcam", "probe.num_clips=4"), STOPS, "Grad-CAM of layer"),
    Case("test", ("task=test", "probe.num_clips=4"), STOPS, "NaN or infinite logits"),
    Case("asdt", ("metric=asdt",), STOPS, "the results of task=weights"),
    Case(
        "train",
        ("task=train", "dataset.num_samples=8", "train.batch_size=4", "train.val_clips=4", "grey"),
        STOPS,
        "the training's final metrics (train/loss)",
    ),
]


@pytest.mark.parametrize("case", NAN_OUTPUTS, ids=lambda c: c.name)
def test_non_finite_outputs_stop_every_task_with_one_line(compose, case, nan_weights, tmp_path):
    command = [c for c in case.command if c not in nan_weights]
    weights = nan_weights[case.command[-1] if case.command[-1] in nan_weights else "nan"]
    cfg = compose(
        *SMALL,
        "dataset=brushmnist_small",
        f"probe.cache_dir={tmp_path / 'cache'}",
        "model.builder.num_classes=100",
        f"model.checkpoint={weights}",
        *command,
        run_dir=tmp_path,
    )
    try:
        record, _ = run_task(cfg)
    except StbiasError as err:
        assert case.match in one_line(err), str(err)
    else:  # a task may also succeed, but then with finite numbers only
        pytest.fail(f"{case.name}: ran to the end with {str(record)[:200]}")
    assert not (tmp_path / "results.json").exists()
    assert not list(tmp_path.glob("*.npz"))


def test_gradcam_of_a_dead_layer_gives_flat_maps_never_nan(compose, nan_weights, tmp_path):
    """A layer whose maps are zero everywhere: flat frames are 0 (the normalisation's tolerance
    is relative, so ``metric.eps=0`` still tells a flat frame), no blob, nothing NaN."""
    cfg = compose(
        *SMALL,
        "dataset=brushmnist_small",
        "model.builder.num_classes=100",
        f"model.checkpoint={nan_weights['dead']}",
        "metric=gradcam",
        "probe.num_clips=4",
        "metric.eps=0",
        "layer=res4",
        run_dir=tmp_path,
    )
    record, _ = run_task(cfg)
    maps = list(tmp_path.glob("*.npz"))
    assert maps and (tmp_path / "results.json").exists()
    for path in maps:
        with np.load(path) as arrays:
            for name in arrays.files:
                if arrays[name].dtype.kind == "f":
                    assert np.isfinite(arrays[name]).all(), (path.name, name)
    json.loads((tmp_path / "results.json").read_text(), parse_constant=pytest.fail)  # no NaN
    with np.load(tmp_path / "blobs.npz") as blobs:
        assert blobs["counts"].size and not blobs["counts"].any()  # flat maps hold no blob
    with np.load(tmp_path / "gradcam.npz") as arrays:
        floats = [arrays[n] for n in arrays.files if arrays[n].ndim >= 3]  # the maps
        assert floats and all(not a.any() for a in floats)  # every frame flat: all zero


# --- reading runs back: results.load, task=compare, the figure pipeline, caches ---------------

GOOD_LAYER = {
    "scores": {"dynamic": 0.2, "static": 0.5},
    "dims": {"dynamic": 10, "static": 30, "residual": 24},
    "percent": {"dynamic": 15.6, "static": 46.9, "residual": 37.5},
    "units": {"dynamic": 5, "static": 40, "joint": 9, "residual": 10, "dead": 0},
}
BROKEN_RECORDS = [
    Case("not json", ('{"task": "probe", "lay',), SKIPS, "not a readable results file"),
    Case("a list", ("[1, 2]",), SKIPS, "not a JSON object"),
    Case("layers a list", (json.dumps({"task": "probe", "layers": [1]}),), SKIPS, "'layers'"),
    Case(
        "scores a list",
        (json.dumps({"task": "probe", "layers": {"res2": {**GOOD_LAYER, "scores": [1]}}}),),
        SKIPS,
        "'scores'",
    ),
    Case(
        "percent nan",
        (
            json.dumps(
                {
                    "task": "probe",
                    "layers": {
                        "res2": {
                            **GOOD_LAYER,
                            "percent": {"dynamic": float("nan"), "static": 1, "residual": 2},
                        }
                    },
                }
            ),
        ),
        SKIPS,
        "'percent'",
    ),
    Case("quickstart", (json.dumps({"task": "quickstart", "results": [3]}),), SKIPS, "results"),
    Case("binary", ("bytes ff fe 00",), SKIPS, "not a readable results file"),
]


def _write_broken(folder: Path, case: Case) -> Path:
    path = folder / "results.json"
    folder.mkdir(parents=True, exist_ok=True)
    if case.name == "binary":
        path.write_bytes(b"\xff\xfe\x00garbage")
    else:
        path.write_text(case.command[0])
    return path


@pytest.mark.parametrize("case", BROKEN_RECORDS, ids=lambda c: c.name)
def test_results_load_skips_a_broken_record_with_one_line(case, tmp_path, caplog):
    from stbias.results import load

    good = tmp_path / "good"
    good.mkdir()
    (good / "results.json").write_text(
        json.dumps({"task": "probe", "model": "m", "layers": {"res2": GOOD_LAYER}})
    )
    bad = _write_broken(tmp_path / "bad", case)
    with caplog.at_level(logging.WARNING, logger="stbias.results"):
        table = load(tmp_path)
    assert list(table["run"]) == [str(good)]
    assert table.attrs["skipped"] == [str(bad)]
    lines = [r.getMessage() for r in caplog.records if r.name == "stbias.results"]
    assert len(lines) == 1 and str(bad) in lines[0] and case.match in lines[0], lines


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory) -> Path:
    """One real (tiny) probe run."""
    folder = tmp_path_factory.mktemp("probe") / "run"
    cfg = compose_config(
        *SMALL,
        "task=probe",
        "dataset=pfm",
        "dataset.split=test",
        "debug=fast",
        "probe.num_clips=4",
        "model.input.frames=4",
        "model.input.sampling_rate=1",
        f"probe.cache_dir={folder.parent / 'cache'}",
        run_dir=folder,
    )
    try:
        run_task(cfg)
    finally:
        HydraConfig.instance().cfg = None
    assert (folder / "results.json").is_file() and (folder / "unit_scores.npz").is_file()
    return folder


def test_compare_skips_a_broken_run_with_one_line(compose, probe_run, tmp_path, caplog):
    runs = tmp_path / "runs"
    shutil.copytree(probe_run, runs / "good")
    bad = _write_broken(runs / "bad", BROKEN_RECORDS[2])
    cfg = compose(*SMALL, "task=compare", f"runs=[{runs}]", run_dir=tmp_path / "compare")
    with caplog.at_level(logging.WARNING, logger="stbias.results"):
        record, _ = run_task(cfg)
    assert record["skipped"] == [str(bad)] and record["num_runs"] == 1
    assert "fig3" in record["figures"]
    assert any(str(bad) in r.getMessage() for r in caplog.records)


def _damage(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_figure_is_drawn_without_a_run_whose_npz_is_damaged(probe_run, tmp_path, caplog):
    from stbias.figures.make import Stage, draw, unreadable_run

    stage = Stage("kowal", str(tmp_path / "runs"), [])
    for name in ("0", "1"):
        shutil.copytree(probe_run, tmp_path / "runs" / name)
    assert unreadable_run(stage.folder) is None
    damaged = tmp_path / "runs" / "1" / "unit_scores.npz"
    assert zipfile.is_zipfile(damaged)
    _damage(damaged)
    assert str(damaged) in unreadable_run(stage.folder)
    with caplog.at_level(logging.WARNING, logger="stbias.results"):
        record = draw("fig3", [stage], str(tmp_path / "out"))
    assert os.path.isfile(record["files"][0])
    lines = [r.getMessage() for r in caplog.records if r.name == "stbias.results"]
    assert len(lines) == 1 and str(damaged) in lines[0], lines
    with open(record["table"]) as fh:
        assert str(tmp_path / "runs" / "1") not in fh.read()


def test_a_finished_multirun_with_a_damaged_run_runs_again(probe_run, tmp_path, monkeypatch):
    from stbias.figures import make

    stage = make.Stage("kowal", str(tmp_path / "runs"), [], jobs=1)
    shutil.copytree(probe_run, tmp_path / "runs" / "0")
    Path(stage.folder, make.DONE).write_text("{}")
    calls = []
    monkeypatch.setattr(
        make.subprocess,
        "run",
        lambda cmd, check: calls.append(cmd) or subprocess.CompletedProcess(cmd, 0),
    )
    make.run_stage(stage)
    assert calls == []  # a readable finished multirun is reused
    (tmp_path / "runs" / "0" / "results.json").write_text("{")
    make.run_stage(stage)
    assert len(calls) == 1 and calls[0] == stage.command()


def test_make_passes_paths_with_spaces_and_quotes(tmp_path):
    up_to_date = subprocess.run(
        ["make", "-q", "-C", str(ROOT), ".venv/.installed"], capture_output=True, timeout=60
    )
    if shutil.which("make") is None or up_to_date.returncode != 0:
        pytest.skip("needs make and an installed .venv")
    ssv2, kth = tmp_path / "my data" / "it's", tmp_path / 'kth "x"'
    ssv2.mkdir(parents=True)
    kth.mkdir()
    proc = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(ROOT),
            "manttari-table1",
            f"PATHS=datasets.ssv2={ssv2} datasets.kth={kth}",
            f"FIGURES_OUT={tmp_path / 'figure out'}",
            "ARGS=--dry-run",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    escaped = str(ssv2).replace("'", "\\'")
    assert f"paths.datasets.ssv2='{escaped}'" in proc.stdout
    assert f"paths.datasets.kth='{kth}'" in proc.stdout
    assert f"hydra.sweep.dir='{tmp_path / 'figure out'}" in proc.stdout


def test_split_sets_keeps_spaces_and_quotes_inside_a_path():
    from stbias.figures.make import split_sets

    assert split_sets(' a.b=/my data/it\'s  c=/x "y" ') == ["a.b=/my data/it's", 'c=/x "y"']
    assert split_sets("") == []


@pytest.mark.slow
def test_a_training_cache_with_a_damaged_results_file_trains_again(compose, tmp_path, caplog):
    from stbias.studies.base import train_once

    cfg = compose(
        *SMALL,
        "task=train",
        "dataset=brushmnist_small",
        "dataset.num_samples=8",
        "train.batch_size=4",
        "train.val_clips=4",
        "trainer.max_epochs=1",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_model_summary=false",
    )
    folder = str(tmp_path / "cache" / "i3d_tiny-key")
    first = train_once(cfg.copy(), folder, "i3d_tiny")
    results = Path(folder, "results.json")
    results.write_text('{"task": "tra')
    with caplog.at_level(logging.WARNING, logger="stbias.studies.base"):
        again = train_once(cfg.copy(), folder, "i3d_tiny")
    assert again["checkpoint"] == first["checkpoint"] and os.path.isfile(again["checkpoint"])
    assert json.loads(results.read_text())["task"] == "train"
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(str(results) in line and "training i3d_tiny again" in line for line in lines)


# --- the smaller points --------------------------------------------------------------------------


def test_task_roots_works_without_a_plus(compose):
    from stbias.tasks.center_bias import dataset_nodes

    cfg = compose("task=center_bias", "task.datasets=[camouflage,davis]", "task.roots={davis: /d}")
    nodes = dataset_nodes(cfg)
    assert nodes["davis"].root == "/d" and list(nodes) == ["camouflage", "davis"]


def test_num_clips_errors_name_the_setting_they_come_from():
    from stbias.data.subsets import choose_clips

    with pytest.raises(StbiasError, match="^metric.num_clips must be >= 1"):
        choose_clips(list(range(5)), 0, "first", 0, node="metric")
    with pytest.raises(StbiasError, match="^unknown metric.sampling 'x'"):
        choose_clips(list(range(5)), 2, "x", 0, node="metric")


def _probe(**kwargs):
    from stbias import Probe
    from stbias.models.inputs import InputSpec

    args = {
        "model": torch.nn.Conv3d(3, 4, 1),
        "layers": {"x": ""},
        "input_spec": InputSpec(frames=4, size=8),
    }
    args.update(kwargs)
    return Probe(**args)


def _clips(t=4, h=8, w=8, c=3, n=2):
    return torch.zeros(n, t, h, w, c, dtype=torch.uint8)


API = [
    Case("model a string", ("model", "resnet"), TYPE_ERROR, "model takes a torch.nn.Module"),
    Case("layers a number", ("layers", 4), TYPE_ERROR, "layers takes aliases, module paths"),
    Case("layers a list of numbers", ("layers", [4]), TYPE_ERROR, "layers takes a layer alias"),
    Case("layers unknown", ("layers", ["res4"]), VALUE_ERROR, "unknown layer 'res4'"),
    Case("layers a foreign module", ("layers", [torch.nn.ReLU()]), VALUE_ERROR, "not a module of"),
    Case("layers empty", ("layers", {}), VALUE_ERROR, "layers is empty"),
    Case("spec a number", ("input_spec", 5), TYPE_ERROR, "input_spec takes an InputSpec"),
    Case("spec unknown key", ("input_spec", {"nope": 1}), VALUE_ERROR, "unknown input key"),
    Case("spec bad value", ("input_spec", {"frames": "x"}), VALUE_ERROR, "input_spec"),
    Case("stylizer a number", ("stylizer", 3), TYPE_ERROR, "stylizer takes"),
    Case("lam a string", ("lam", "x"), TYPE_ERROR, "lam takes a number"),
    Case("lam out of range", ("lam", 1.5), VALUE_ERROR, "lam=1.5"),
    Case("lam nan", ("lam", float("nan")), VALUE_ERROR, "lam=nan"),
    Case("layout", ("layout", "nhwc"), VALUE_ERROR, "unknown layout 'nhwc'"),
    Case("estimator", ("estimator", 3), TYPE_ERROR, "estimator takes one of pooled"),
    Case("batch size zero", ("batch_size", 0), VALUE_ERROR, "batch_size=0"),
    Case("batch size float", ("batch_size", 2.5), TYPE_ERROR, "batch_size takes an integer"),
    Case("seed a string", ("seed", "0"), TYPE_ERROR, "seed takes an integer"),
    Case("channels a list", ("channels", [4]), TYPE_ERROR, "channels takes a mapping"),
]


@pytest.mark.parametrize("case", API, ids=lambda c: c.name)
def test_probe_arguments(case):
    error = TypeError if case.expected == TYPE_ERROR else ValueError
    with pytest.raises(error, match=case.match) as err:
        _probe(**{case.command[0]: case.command[1]})
    assert not isinstance(err.value, (AttributeError, KeyError))
    one_line(err.value)


CLIPS = [
    Case("frames", ("clips", _clips(t=6)), VALUE_ERROR, r"\(6, 8, 8, 3\), but the input spec"),
    Case("size", ("clips", _clips(h=16, w=16)), VALUE_ERROR, r"takes \(4, 8, 8, 3\)"),
    Case("channels", ("clips", _clips(c=2)), VALUE_ERROR, "channels=3"),
    Case("float", ("clips", torch.full((2, 4, 8, 8, 3), 2.0)), VALUE_ERROR, r"are in \[0, 1\]"),
    Case("float nan", ("clips", torch.full((2, 4, 8, 8, 3), float("nan"))), VALUE_ERROR, "span"),
    Case("int64", ("clips", torch.zeros(2, 4, 8, 8, 3, dtype=torch.long)), VALUE_ERROR, "uint8"),
    Case("none", ("clips", _clips(n=0)), VALUE_ERROR, "no clips"),
    Case("a list", ("clips", [1, 2]), TYPE_ERROR, r"Probe.run takes clips \(N, T, H, W, C\)"),
    Case("a numpy array", ("clips", np.zeros((2, 4, 8, 8, 3), np.uint8)), TYPE_ERROR, "ndarray"),
    Case(
        "a dataset of other clips",
        ("clips", torch.utils.data.Subset([{"video": _clips(h=16)[0], "index": 0}], [0])),
        VALUE_ERROR,
        "the dataset's clips",
    ),
]


@pytest.mark.parametrize("case", CLIPS, ids=lambda c: c.name)
def test_probe_run_checks_clips_against_the_input_spec(case):
    error = TypeError if case.expected == TYPE_ERROR else ValueError
    with pytest.raises(error, match=case.match) as err:
        _probe().run(case.command[1])
    one_line(err.value)


def test_weight_temporality_arguments():
    from stbias import WeightTemporality

    with pytest.raises(TypeError, match="model takes a torch.nn.Module"):
        WeightTemporality("i3d")
    with pytest.raises(TypeError, match="delta takes a number"):
        WeightTemporality(torch.nn.Conv3d(1, 1, 3), delta="a")
    with pytest.raises(ValueError, match="delta=nan"):
        WeightTemporality(torch.nn.Conv3d(1, 1, 3), delta=float("nan"))


def test_results_load_arguments(tmp_path):
    from stbias.results import load

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(
        json.dumps({"task": "probe", "model": "m", "layers": {"res2": GOOD_LAYER}})
    )
    with pytest.raises(TypeError, match="got int"):
        load(123)
    with pytest.raises(TypeError, match="a str or a path; got int"):
        load([tmp_path, 1])
    with pytest.raises(TypeError, match="tasks takes task names"):
        load(tmp_path, tasks=[1])
    assert len(load(tmp_path, tasks="probe")) == 1  # one name, not its letters
    assert load(tmp_path, tasks="train").empty


def test_study_readers_name_the_file_they_cannot_read(tmp_path):
    from stbias.results import center_bias_arrays
    from stbias.studies.base import read_run
    from stbias.studies.manttari import redraw

    (tmp_path / "results.json").write_text('{"task": "mant')
    (tmp_path / "center_bias.npz").write_bytes(b"PK\x03\x04 not a zip")
    for read in (read_run, redraw):
        with pytest.raises(StbiasError, match="results.json: not a readable results file") as err:
            read(str(tmp_path))
        assert str(tmp_path) in one_line(err.value)
    with pytest.raises(StbiasError, match="center_bias.npz cannot be read"):
        center_bias_arrays(str(tmp_path))
