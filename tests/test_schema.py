"""The one record of every run: the shipped results.json schema, its validator, and the records
and W&B runs that the tasks write."""

import json
import re
from pathlib import Path

import pytest
from conftest import read_wandb_run

from stbias.errors import StbiasError
from stbias.runner import RUNS as TASKS
from stbias.runner import run_task
from stbias.schema import SCHEMA_FILE, errors, numbers_key, schema, validate

ROOT = Path(__file__).resolve().parents[1]


def good_record(**changes):
    record = {
        "schema": "stbias/results/1",
        "task": "probe",
        "model": "i3d",
        "dataset": "ssv2",
        "weights": "random",
        "seed": 0,
        "settings": {"metric": {"lam": 0.5}},
        "config": {},
        "environment": {},
        "skipped_clips": 2,
        "layers": {
            "res5": {
                "scores": {"dynamic": 0.21, "static": 0.55},
                "units": {"dynamic": 12, "static": 900},
                "lam": 0.5,
                "ci": {"level": 0.95, "replicates": 50, "units": {"dynamic": [10.0, 14.0]}},
            }
        },
    }
    record.update(changes)
    return record


def test_the_schema_ships_inside_the_package_and_names_every_task():
    assert Path(SCHEMA_FILE).parent == ROOT / "stbias" / "schema"
    shipped = schema()
    writing = set(TASKS) - set(shipped["x-no-record"])
    assert set(shipped["properties"]["task"]["enum"]) == writing
    assert set(shipped["x-numbers"]) == writing
    assert numbers_key("probe") == "layers"  # the layout DESIGN.md shows stays valid
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert "schema/*.json" in pyproject


def test_the_validator_accepts_the_documented_probe_layout():
    assert errors(good_record()) == []
    assert errors(good_record(seed=None, dataset=None)) == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model": {"name": "i3d"}}, 'results.json.model is {"name": "i3d"}, not string or null'),
        ({"seed": "0"}, "results.json.seed is '0', not integer or null"),
        ({"task": "probes"}, "results.json.task is 'probes'; valid: probe"),
        ({"skipped_clips": -1}, "results.json.skipped_clips is -1, below the minimum 0"),
        ({"layers": None}, "results.json.layers is null, not object"),
        ({"schema": "stbias/results/0"}, "results.json.schema is 'stbias/results/0'"),
    ],
)
def test_the_validator_names_the_bad_key(changes, message):
    found = errors(good_record(**changes))
    assert len(found) == 1 and found[0].startswith(message), found


def test_the_validator_checks_nested_intervals_and_task_numbers():
    record = good_record()
    record["layers"]["res5"]["ci"]["units"]["dynamic"] = [10.0]
    record["layers"]["res5"]["lam"] = float("nan")
    found = errors(record)
    assert "results.json.layers.res5.ci.units.dynamic has 1 items, fewer than 2" in found
    assert "results.json.layers.res5.lam is nan, not a finite number" in found
    del record["layers"]
    assert "results.json matches none of" in " ".join(errors(record))  # layers or series
    missing = {k: v for k, v in good_record(task="train").items() if k != "seed"}
    assert sorted(errors(missing)) == [
        "results.json has no key 'metrics'",
        "results.json has no key 'seed'",
    ]
    with pytest.raises(StbiasError, match=r"run/results.json does not follow stbias/results/1"):
        validate(missing, where="run/results.json")


def test_every_task_writes_its_record_through_the_schema():
    """No task writes results.json but through stbias.tasks.record.write_results."""
    for path in (ROOT / "stbias" / "tasks").glob("*.py"):
        text = path.read_text()
        assert not re.search(r"write_json\([^)]*results\.json", text), path.name


TINY = ["model=i3d_tiny", "trainer.enable_progress_bar=false"]
EXPLAIN = [
    *TINY,
    "dataset=brushmnist_small",
    "model.input.frames=8",
    "model.input.size=32",
    "probe.num_clips=2",
    "probe.batch_size=2",
    "metric.figures=1",
]


def _run(compose, tmp_path, name, *overrides):
    folder = tmp_path / name
    folder.mkdir()
    record, _ = run_task(compose(*overrides, run_dir=folder))
    return record, folder


@pytest.mark.slow
def test_every_task_record_follows_the_schema_and_reaches_wandb(
    compose, tmp_path, monkeypatch, caplog
):
    """probe, weights, temporal masks, Grad-CAM and compare: the files on disk follow the schema,
    and each W&B offline run holds the header as its config, the intervals in its summary and
    its files as an artifact."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    monkeypatch.chdir(tmp_path)
    cache = f"probe.cache_dir={tmp_path / 'cache'}"
    runs = {
        "probe": _run(
            compose,
            tmp_path,
            "probe",
            *TINY,
            "probe.num_clips=8",
            "probe.batch_size=4",
            "probe.bootstrap=5",
            cache,
            "logger=wandb",
        ),
        "weights": _run(compose, tmp_path, "weights", *TINY, "metric=asdt", "logger=none"),
        "weights_log": [r.getMessage() for r in caplog.records if r.name == "stbias.tasks.weights"],
        "temporal_mask": _run(
            compose,
            tmp_path,
            "mask",
            *EXPLAIN,
            "metric=temporal_mask",
            "metric.iterations=2",
            "logger=wandb",
        ),
        "gradcam": _run(compose, tmp_path, "cam", *EXPLAIN, "metric=gradcam", "logger=none"),
    }
    runs["compare"] = _run(
        compose,
        tmp_path,
        "compare",
        "task=compare",
        f"runs=[{tmp_path / 'probe'},{tmp_path / 'weights'}]",
        "logger=wandb",
    )
    # metric=asdt says in one warning line that the weights are random
    assert [m for m in runs.pop("weights_log") if "random weights" in m] == [
        "model i3d_tiny has random weights (no checkpoint, model.pretrained=false): the results "
        "describe the initialisation, not a trained network"
    ]
    for task, (_, folder) in runs.items():
        stored = json.loads((folder / "results.json").read_text())
        assert errors(stored) == [], task
        assert stored["task"] == task and list(stored)[:7] == [
            "schema",
            "task",
            "model",
            "dataset",
            "weights",
            "seed",
            "settings",
        ]
        assert isinstance(stored[numbers_key(task)], (dict, list))
    assert runs["weights"][0]["weights"] == "random" and runs["weights"][0]["dataset"] is None
    assert runs["compare"][0]["model"] == "i3d_tiny"

    probe = read_wandb_run(runs["probe"][1])
    assert probe["config"]["model"] == "i3d_tiny" and probe["config"]["weights"] == "random"
    res3 = runs["probe"][0]["layers"]["res3"]
    lo, hi = res3["ci"]["units"]["static"]
    assert probe["summary"]["probe/static_units_lo/res3"] == lo
    assert probe["summary"]["probe/static_units_hi/res3"] == hi
    assert {"results.json", "results.csv", "unit_scores.npz"} <= set(probe["artifact"])

    mask = read_wandb_run(runs["temporal_mask"][1])
    assert mask["config"]["model"] == "i3d_tiny"  # a string, as for every task
    assert mask["config"]["settings"]["iterations"] == 2
    assert {"results.json", "masks.npz"} <= set(mask["artifact"])

    compare = read_wandb_run(runs["compare"][1])
    assert compare["run"]["display_name"] == "compare-i3d_tiny-pfm"
    assert {"results.json", "compare.csv"} <= set(compare["artifact"])
