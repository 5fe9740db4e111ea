"""The studies wing: one cache key, sub-runs composed from a node, the dispatch and its layers."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from stbias.config import compose
from stbias.errors import StbiasError
from stbias.runner import RUNS, STUDIES, run_task
from stbias.studies import base
from stbias.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]


def test_a_sub_run_picks_options_replaces_keys_and_keeps_the_studys_seed_and_trainer():
    cfg = compose(["seed=7", "trainer.max_epochs=3"])
    node = compose(["model=i3d_tiny"]).model
    sub = base.sub_run(
        cfg,
        {
            "defaults": [{"task": "train"}, "dataset=pfm"],
            "model": node,
            "dataset.num_samples": 64,
            "train.optimizer.lr": 0.5,
        },
    )
    assert sub.task.name == "train" and sub.dataset._target_.endswith("PlacesFacesMNIST")
    assert sub.model.name == "i3d_tiny" and "models" not in sub.model  # replaced, not merged
    assert sub.dataset.num_samples == 64 and sub.train.optimizer.lr == 0.5
    assert sub.seed == 7 and sub.trainer.max_epochs == 3
    assert sub.logger == compose(["logger=none"]).logger  # a sub-run logs nothing of its own


def _train_cfg(*overrides):
    cfg = compose(["task=train", "model=c2d_tiny", "dataset=pfm", *overrides])
    with open_dict(cfg):
        cfg.train.output_dir = None
    return cfg


def test_one_training_key_changes_with_what_trains_and_not_with_where_or_what_is_shown():
    key = base.training_key(_train_cfg())
    assert key == base.training_key(_train_cfg())
    assert key != base.training_key(_train_cfg("seed=1"))
    assert key != base.training_key(_train_cfg("train.optimizer.lr=0.1"))
    assert key != base.training_key(_train_cfg("trainer.max_epochs=1"))
    moved = _train_cfg("trainer.enable_progress_bar=false")
    with open_dict(moved):
        moved.train.output_dir = "/elsewhere"
        moved.train.resume = "/elsewhere/checkpoints/last.ckpt"
    assert base.training_key(moved) == key


def test_every_task_option_reaches_a_function_of_its_own_layer():
    options = sorted(p.stem for p in (ROOT / "stbias/conf/task").glob("*.yaml"))
    assert sorted(RUNS) == options
    assert not set(TASKS) & set(STUDIES)
    for name, target in RUNS.items():
        module, func = target.split(":")
        layer = "stbias.studies." if name in STUDIES else "stbias.tasks."
        assert module.startswith(layer), (name, module)
        assert callable(getattr(importlib.import_module(module), func))


def test_an_unknown_task_names_the_valid_ones():
    cfg = compose(["task=train"])
    with open_dict(cfg):
        cfg.task.name = "nope"
    with pytest.raises(StbiasError, match="unknown task 'nope'; valid tasks: center_bias, compare"):
        run_task(cfg)


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


@pytest.mark.parametrize("layer", ["tasks", "api", "lit", "metrics", "plotting", "models", "data"])
def test_nothing_below_the_studies_imports_them(layer):
    paths = [ROOT / "stbias" / f"{layer}.py"] + sorted((ROOT / "stbias" / layer).rglob("*.py"))
    for path in (p for p in paths if p.exists()):
        upward = {m for m in _imported(path) if m.startswith(("stbias.studies", "stbias.runner"))}
        assert not upward, f"{path.relative_to(ROOT)} imports {sorted(upward)}"


def test_a_sub_run_composes_from_a_yaml_node_with_defaults():
    node = OmegaConf.create(
        "defaults: [{task: train}, dataset=pfm]\ntrain.batch_size: 3\ndataset.num_places: 2\n"
    )
    sub = base.sub_run(compose(["seed=3"]), node)
    assert sub.task.name == "train" and sub.dataset._target_.endswith("PlacesFacesMNIST")
    assert (sub.train.batch_size, sub.dataset.num_places, sub.seed) == (3, 2, 3)
