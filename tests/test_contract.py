"""Every command of the README's user-contract block, run as written on released-layout data.

The block is read from README.md; `/data/<name>` and `/weights/<file>` are replaced by fixtures
the tests write (tests/fixtures.py) in the datasets' released layouts and at the models' native
sizes; commands are shrunk only by clip counts and `trainer.limit_*` keys. A command of the block
that no check below recognises fails the test: a README command cannot break silently.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import fixtures
import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def contract_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## The user contract", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            commands.append(words)
    return commands


COMMANDS = contract_block()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Fixture data and weights, and the folder every command runs in (shared caches)."""
    base = tmp_path_factory.mktemp("contract")
    data = base / "data"
    from stbias.tasks.model_setup import build_model

    anet, stylized = fixtures.activitynet(data / "activitynet", data / "stylized_activitynet")
    torch.manual_seed(0)
    slowfast = build_model(compose_config("model=slowfast").model)
    csn = build_model(compose_config("model=ir_csn_152_ig65m").model)
    paths = {
        "/data/ssv2": fixtures.ssv2(data / "ssv2"),
        "/data/kinetics": fixtures.kinetics(data / "kinetics"),
        "/data/diving48": fixtures.diving48(data / "diving48"),
        "/data/activitynet": anet,
        "/data/stylized_activitynet": stylized,
        "/weights/SLOWFAST_8x8_R50.pyth": fixtures.pyth_checkpoint(
            base / "weights" / "SLOWFAST_8x8_R50.pyth", slowfast
        ),
        # VMZ's release: a plain state dict in torchvision's VideoResNet key layout
        "/weights/irCSN_152_ig65m_from_scratch_f125286141.pth": fixtures.state_dict_file(
            base / "weights" / "irCSN_152_ig65m_from_scratch_f125286141.pth", csn
        ),
        "/data/youtube_vis": fixtures.youtube_vis(data / "youtube_vis"),
        "/weights/vistr_r50.pth": fixtures.vistr_checkpoint(
            base / "weights" / "vistr_r50.pth", build_model(compose_config("model=vistr_r50").model)
        ),
    }
    work = base / "work"
    work.mkdir()
    return {"paths": paths, "work": work}


def _substitute(words: list[str], paths: dict[str, Path]) -> list[str]:
    out = []
    for word in words:
        for placeholder, path in paths.items():
            word = word.replace(placeholder, str(path))
        out.append(word)
    return out


def _value(words: list[str], key: str, default: str | None = None) -> str | None:
    for word in words:
        if word.startswith(f"{key}="):
            return word.split("=", 1)[1]
    return default


def _shrink(words: list[str]) -> list[str]:
    """Clip counts and trainer.limit_* keys only."""
    task, metric = _value(words, "task"), _value(words, "metric")
    if task == "train":
        shrink = [
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
            "train.val_clips=8",
        ]
        if _value(words, "train.static_dropout.p"):
            shrink.append("probe.num_clips=8")
        return shrink
    if metric in ("temporal_mask", "gradcam"):
        return ["probe.num_clips=2", "probe.batch_size=2"]
    if task == "center_bias":
        return ["probe.num_clips=8"]
    if task == "scene_bias":  # an action model and a place classifier trained, clips scored
        return [
            "task.videos=8",
            "task.train.clips=64",
            "task.train.val_clips=16",
            "task.places.train_per_class=4",
            "task.places.test_per_class=2",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
        ]
    if task == "layers" or _value(words, "metric") in ("asdt", "selfconv"):
        return []
    if _value(words, "model") is None:  # model=quickstart: two tiny models trained, then probed
        return ["task.train.clips=64", "task.train.val_clips=32", "probe.num_clips=16"]
    clips = 4 if _value(words, "trainer") == "ddp_cpu" else 2
    return [f"probe.num_clips={clips}", f"probe.batch_size={clips}"]


def _results(work: Path, before: set[Path]) -> list[dict]:
    found = sorted(set(work.rglob("results.json")) - before)
    # trainings a study caches (outputs/quickstart, outputs/scene_bias) are not the command's
    found = [
        p for p in found if not any(s in p.parent.parent.name for s in ("quickstart", "scene_bias"))
    ]
    return [json.loads(p.read_text()) | {"_dir": str(p.parent)} for p in found]


def _finite_probe(record: dict) -> None:
    assert record["task"] == "probe" and record["layers"]
    for layer, entry in record["layers"].items():
        for value in entry["scores"].values():
            assert math.isfinite(value), (layer, entry["scores"])
        units = entry["units"]
        assert sum(units[c] for c in ("dynamic", "static", "joint", "residual")) > 0


def _check(words: list[str], records: list[dict], out: str, paths: dict[str, Path]) -> None:
    """What each command of the block must have produced."""
    line = " ".join(words)
    task, model = _value(words, "task"), _value(words, "model")
    if _value(words, "metric") == "asdt":
        (record,) = records
        assert record["task"] == "weights" and record["model"] == model
        assert record["config"]["task"]["name"] == "weights"  # the composed config says so
        assert all(v["asdt"] > 0 for v in record["layers"].values())
        if _value(words, "model.checkpoint"):  # a released file: every tensor loaded
            name = "/weights/irCSN_152_ig65m_from_scratch_f125286141.pth"
            assert record["weights"] == f"file:{paths[name]}" and len(record["layers"]) == 1 + 50
    elif task == "layers":
        assert "slow_res2" in out and "fast_res5" in out and "blocks.1.multipathway_blocks.0" in out
    elif _value(words, "metric") == "temporal_mask":
        (record,) = records
        assert record["task"] == "temporal_mask" and len(record["clips"]) == 2
        frames = record["config"]["model"]["input"]["frames"]
        for clip in record["clips"]:
            assert 0 <= clip["length"] <= frames and 0 <= clip["os"] <= 1
        assert record["weights"] == "random" and "random weights" in out
    elif _value(words, "metric") == "gradcam":
        (record,) = records
        assert record["task"] == "gradcam" and record["layer"] == "res3"
        assert len(record["clips"]) == 2 and record["summary"]["blob_count"]["n"] == 2 * 16
        assert os.path.isfile(Path(record["_dir"]) / "gradcam.npz")
    elif task == "center_bias":
        (record,) = records
        assert set(record["datasets"]) == {"camouflage", "salient"}
        for entry in record["datasets"].values():
            assert 0 < entry["center_mass"] <= 1 and 0 < entry["foreground_fraction"] < 1
    elif task == "scene_bias":
        (record,) = records
        common, rare = record["tables"]["table_a3"]
        assert (common["group"], rare["group"]) == ("common", "rare")
        assert common["videos"] + rare["videos"] == record["num_clips"] == 8
        assert common["videos"] > rare["videos"] and record["tables"]["fig_a12"][0]["share"] == 1
    elif task == "train" and _value(words, "dataset") == "camouflage":
        (record,) = records
        assert record["objective"] == "segmentation" and os.path.isfile(record["checkpoint"])
        assert record["config"]["model"]["input"]["size"] == 224 and "val/J" in record
    elif task == "train" and _value(words, "dataset") == "vis_synthetic":
        (record,) = records
        assert record["objective"] == "instance_segmentation"
        assert os.path.isfile(record["checkpoint"]) and 0 <= record["val/mIoU"] <= 1
        assert record["config"]["model"]["input"]["size"] == 64  # vistr_tiny's own size
    elif task == "train":
        (record,) = records
        assert record["task"] == "train" and os.path.isfile(record["checkpoint"])
        assert record["shuffle_frames"] is ("train.shuffle_frames=true" in words)
        if _value(words, "dataset") == "brushmnist_small":
            assert record["in_channels"] == 1 and record["num_classes"] == 100
        if _value(words, "train.static_dropout.p"):
            refreshes = record["static_dropout"]["refreshes"]
            assert refreshes and all(0 <= r["set_size"] <= 128 for r in refreshes)
            assert record["static_dropout"]["settings"]["p"] == 0.5
    elif model is None:  # the embedded default
        (record,) = records
        assert record["task"] == "quickstart" and record["models"] == ["c2d_tiny", "i3d_tiny"]
        c2d = record["results"]["c2d_tiny"]["layers"]
        assert all(e["units"]["dynamic"] == 0 for e in c2d.values())  # frame-order blind
    elif "-m" in words and _value(words, "metric.lam"):
        assert len(records) == 5
        for record in records:
            _finite_probe(record)
        lams = sorted(r["lam"] for r in records)
        assert lams == [0.1, 0.3, 0.5, 0.7, 0.9]
        assert sorted(r["cache"]["clips_run"] for r in records)[:4] == [0, 0, 0, 0]
    elif "-m" in words:
        assert len(records) == 4
        assert sorted(tuple(r["layers"]) for r in records) == [
            ("res2",),
            ("res3",),
            ("res4",),
            ("res5",),
        ]
        for record in records:
            _finite_probe(record)
            assert record["config"]["model"]["input"]["size"] == 224  # native size
    else:
        (record,) = records
        _finite_probe(record)
        spec = record["config"]["model"]["input"]
        native = OmegaConf.load(ROOT / "stbias" / "conf" / "model" / f"{model}.yaml").input
        assert record["model"] == model and spec["size"] == native.size  # the model's own size
        assert spec["frames"] == native.frames
        assert record["config"]["dataset"]["size"] == spec["size"]  # one source of truth
        assert record["config"]["dataset"]["num_frames"] == spec["frames"]
        if _value(words, "model.checkpoint"):
            weights = _value(_substitute(words, paths), "model.checkpoint")
            assert record["weights"] == f"file:{weights}"
            assert len(record["weights_sha256"]) == 64
            assert record["sampling"] == "stratified" and record["num_clips"] == 2
            labels = {c["label"] for c in _clips(record)}
            assert len(labels) == 2  # a label-sorted CSV: not the first class twice
            if model.startswith("vistr"):  # backbone, encoder and decoder aliases
                assert [a[:3] for a in record["layers"]] == ["res"] * 4 + ["enc"] * 6 + ["dec"] * 6
        else:
            assert record["weights"] == "random"
            assert "random weights" in out
        if _value(words, "stylization") == "precomputed_activitynet":
            assert record["stylization"] == "precomputed_activitynet"
        if _value(words, "trainer") == "ddp_cpu":
            assert record["num_clips"] == 4 and record["config"]["trainer"]["devices"] == 2
        if _value(words, "metric") == "layerwise":
            assert "S_dyn  S_stat   dyn%" in out and os.path.isfile(
                Path(record["_dir"]) / "fig3.png"
            )
        else:
            assert "dyn  stat joint" in out and os.path.isfile(Path(record["_dir"]) / "units.png")
    assert line  # every branch above is a known command of the block


def _clips(record: dict) -> list[dict]:
    import csv

    with open(Path(record["_dir"]) / "clips.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("words", COMMANDS, ids=[" ".join(c)[:80] for c in COMMANDS])
def test_readme_command_runs_as_written(words, world):
    work, paths = world["work"], world["paths"]
    program, *args = _substitute(words, paths)
    if program == "python" and args[0] == "run.py":
        command = [sys.executable, str(ROOT / "run.py"), *args[1:]]
    elif program == "stbias":
        command = [str(Path(sys.executable).parent / "stbias"), *args]
    else:
        pytest.fail(f"the README's contract block has a command this test cannot run: {words}")
    before = set(work.rglob("results.json"))
    env = {**os.environ, "OMP_NUM_THREADS": "2", "WANDB_MODE": "offline"}
    done = subprocess.run(
        [*command, *_shrink(words)], cwd=work, env=env, capture_output=True, text=True, timeout=1500
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    _check(words, _results(work, before), done.stdout + done.stderr, paths)


def test_the_block_names_the_binding_commands():
    lines = [" ".join(c) for c in COMMANDS]
    assert lines[0] == "python run.py"
    for needed in ("metric.lam=0.1,0.3,0.5,0.7,0.9", "metric=asdt", "train.shuffle_frames=true"):
        assert any(needed in line for line in lines), needed
    assert any(re.match(r"stbias ", line) for line in lines)
