"""Shared test setup: quiet, deterministic, small, on CPU unless a test is marked `gpu`."""

import os
from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from stbias import config

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _restore_logging():
    """Tests that run the CLI in-process let Hydra configure logging on pytest's captured
    streams, which are closed after the test: give later tests the logging they started with."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


def compose_config(*overrides: str, run_dir: Path | str | None = None, hydra: bool = False):
    """The root config as ``python run.py <overrides>`` composes it, for a test to shrink and run.

    With ``run_dir`` (created if missing), Hydra's runtime is set as during that run: a task called
    in-process writes there and reads its choices from ``HydraConfig``. ``hydra=True`` keeps the
    ``hydra`` node (the command line, the sweeper). Tests take the ``compose`` fixture, which resets
    the runtime after them; a fixture wider than a test calls this and resets it itself.
    """
    cfg = config.compose(overrides, return_hydra_config=True)
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        cfg.hydra.runtime.output_dir = str(run_dir)
        HydraConfig.instance().set_config(cfg)
    if not hydra:
        with open_dict(cfg):
            del cfg["hydra"]
    return cfg


@pytest.fixture
def compose():
    """:func:`compose_config`, with Hydra's runtime reset after the test."""
    yield compose_config
    HydraConfig.instance().cfg = None


def read_wandb_run(folder):
    """The W&B offline run under ``folder`` as W&B stored it: run info, config, summary, table
    files and the files of its artifact.

    Reads the run file with W&B's own ``wandb beta leet inspect --json`` (one record a line).
    """
    import json
    import subprocess
    import sys
    from pathlib import Path

    (path,) = Path(folder).glob("wandb/offline-run-*/run-*.wandb")
    dump = subprocess.run(
        [
            str(Path(sys.executable).parent / "wandb"),
            "beta",
            "leet",
            "inspect",
            "--json",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    run, summary, config, artifact = {}, {}, {}, {}
    for line in dump.splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if record.get("type") == "run":
            run = record["run"]
            config.update(run.get("config", {}).get("update", {}))
        elif record.get("type") == "config":
            config.update(record["config"].get("update", {}))
        elif record.get("type") == "summary":
            summary.update(record["summary"].get("update", {}))
        elif record.get("type") == "artifact":  # the files of the run's artifact, by name
            for entry in record["artifact"]["manifest"]["contents"]:
                artifact[entry["path"]] = entry
    tables = {
        str(p.relative_to(path.parent / "files" / "media" / "table")).split("_")[0]: json.loads(
            p.read_text()
        )
        for p in (path.parent / "files" / "media" / "table").rglob("*.table.json")
    }
    return {
        "run": run,
        "summary": summary,
        "tables": tables,
        "config": config,
        "artifact": artifact,
    }
