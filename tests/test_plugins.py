"""One Python file and one YAML add a model or a dataset reader: nothing else is edited.

A temporary package outside stbias holds a tiny model (``plug_models.py`` + ``model/plug_net.yaml``)
and a tiny dataset reader (``plug_data.py`` + ``dataset/plug_clips.yaml``); Hydra finds the YAMLs
through ``hydra.searchpath`` on the command line, Python finds the files through PYTHONPATH, and
``python run.py model=plug_net dataset=plug_clips`` probes the new model on the new data. The
settings of both are checked against their builders' signatures like every packaged option.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

MODEL_PY = '''
"""A two-stage 3D CNN: the whole model file of a new option."""
import torch
from torch import nn


class PlugNet(nn.Module):
    def __init__(self, width: int = 4, num_classes: int = 3) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(nn.Conv3d(3, width, 3, padding=1), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv3d(width, 2 * width, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage2(self.stage1(x)).mean(dim=(2, 3, 4)))


def plug_net(width: int = 4, num_classes: int = 3) -> PlugNet:
    return PlugNet(width, num_classes)
'''

MODEL_YAML = """
name: plug_net
builder:
  _target_: plug_models.plug_net
  width: 4
  num_classes: 3
pretrained: false
checkpoint: null
layers:
  early: stage1
  late: stage2
channels:
  early: 4
  late: 8
input:
  frames: 4
  sampling_rate: 1
  size: 16
  short_side: null
  mean: [0.5, 0.5, 0.5]
  std: [0.25, 0.25, 0.25]
  channels: 3
"""

DATA_PY = '''
"""Moving squares on a coloured background: the whole reader file of a new dataset."""
import torch
from torch.utils.data import Dataset


class PlugClips(Dataset):
    def __init__(self, split: str = "train", num_frames: int = 4, sampling_rate: int = 1,
                 size: int = 16, num_samples: int = 8, seed: int = 0) -> None:
        self.split, self.num_frames, self.size = split, num_frames, size
        self.num_samples, self.seed = num_samples, seed

    def __len__(self) -> int:
        return self.num_samples

    def clip_info(self, index: int) -> dict:
        return {"id": f"plug_{self.split}_{index}", "label": index % 2}

    def __getitem__(self, index: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 1000 + index)
        video = torch.zeros(self.num_frames, self.size, self.size, 3, dtype=torch.uint8)
        video[:] = torch.randint(0, 255, (3,), generator=g, dtype=torch.uint8)
        step = 1 if index % 2 else -1
        for t in range(self.num_frames):
            x = (4 + step * t) % (self.size - 4)
            video[t, 4:8, x : x + 4] = 255
        return {"video": video, **self.clip_info(index), "index": index}
'''

DATA_YAML = """
_target_: plug_data.PlugClips
split: train
num_frames: ${model.input.frames}
sampling_rate: ${model.input.sampling_rate}
size: ${model.input.size}
num_samples: 8
seed: ${seed}
"""


@pytest.fixture
def plugin(tmp_path):
    """The temporary package: two Python files, and a config folder with two YAMLs."""
    code = tmp_path / "code"
    conf = tmp_path / "conf"
    for folder in (code, conf / "model", conf / "dataset"):
        folder.mkdir(parents=True)
    (code / "plug_models.py").write_text(textwrap.dedent(MODEL_PY))
    (code / "plug_data.py").write_text(textwrap.dedent(DATA_PY))
    (conf / "model" / "plug_net.yaml").write_text(MODEL_YAML)
    (conf / "dataset" / "plug_clips.yaml").write_text(DATA_YAML)
    return {"code": code, "conf": conf, "work": tmp_path}


def _run(plugin, *args: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join([str(plugin["code"]), str(ROOT)])
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "run.py"),
            f"hydra.searchpath=[file://{plugin['conf']}]",
            f"hydra.run.dir={plugin['work'] / 'run'}",
            "logger=none",
            *args,
        ],
        cwd=plugin["work"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_new_model_and_dataset_run_from_one_file_and_one_yaml_each(plugin):
    done = _run(plugin, "model=plug_net", "dataset=plug_clips", "probe.num_clips=4")
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((plugin["work"] / "run" / "results.json").read_text())
    assert record["task"] == "probe" and record["model"] == "plug_net"
    assert record["dataset"] == "plug_clips" and record["num_clips"] == 4
    assert list(record["layers"]) == ["early", "late"]
    units = record["layers"]["late"]["units"]
    assert sum(units.values()) == 8  # every unit of the declared 8 channels is classified
    assert "early" in done.stdout and "late" in done.stdout  # the layer table


@pytest.mark.parametrize(
    "setting,named",
    [
        ("model.builder.depth=3", "model.builder.depth is not a setting"),
        ("model.builder.width=wide", "model.builder.width='wide' is not valid"),
        ("dataset.num_samples=many", "dataset.num_samples='many' is not valid"),
        ("+dataset.colour=red", "dataset.colour is not a setting"),
    ],
)
def test_a_new_option_s_settings_are_checked_against_its_signature(plugin, setting, named):
    done = _run(plugin, "model=plug_net", "dataset=plug_clips", setting)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("stbias: error: ") and named in lines[0]
