"""A new explanation method is one Python file and one YAML: it runs from run.py with no other edit.

The test writes, in a temporary folder outside the package, ``occlusion_method.py`` (a method of
stbias.api.Explanation's shape: the drop of the target's probability when one frame at a time is
replaced by the clip's mean frame) and ``conf/metric/occlusion.yaml`` naming it, then runs
``python run.py metric=occlusion`` with that folder on the config search path and the import
path, and reads the run directory back with stbias.results.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import stbias

ROOT = Path(__file__).resolve().parents[1]

METHOD = '''
import torch

from stbias.api import Explanation


class FrameOcclusion(Explanation):
    """How much the target's probability drops when frame t is replaced by the mean frame."""

    outputs = ("drop", "drops", "most_needed")

    def __init__(self, model, layer=None, input_spec=None, *, fill="mean", **common):
        super().__init__(model, layer, input_spec, **common)
        self.fill = fill

    def settings(self):
        return {"fill": self.fill}

    def explain_batch(self, clips, target, labels):
        pack = self.pack()
        with torch.no_grad():
            probs = self.model(pack(clips)).softmax(-1)
            target = probs.argmax(-1) if target is None else target
            full = probs.gather(1, target[:, None])[:, 0]
            mean = clips.mean(dim=2, keepdim=True)
            drops = []
            for t in range(clips.shape[2]):
                occluded = clips.clone()
                occluded[:, :, t : t + 1] = mean
                p = self.model(pack(occluded)).softmax(-1).gather(1, target[:, None])[:, 0]
                drops.append(full - p)
            drops = torch.stack(drops, 1)
        return {"drop": drops.mean(1), "drops": drops, "most_needed": drops.argmax(1).float()}
'''

YAML = """
name: occlusion
task: explain
method:
  _target_: occlusion_method.FrameOcclusion
  fill: mean
target_class: predicted
label_key: label
figures: 0
"""


def test_a_new_explanation_method_runs_from_run_py(tmp_path):
    (tmp_path / "occlusion_method.py").write_text(METHOD)
    (tmp_path / "conf" / "metric").mkdir(parents=True)
    (tmp_path / "conf" / "metric" / "occlusion.yaml").write_text(YAML)
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        str(ROOT / "run.py"),
        "metric=occlusion",
        "probe.num_clips=3",
        "probe.sampling=first",
        "probe.batch_size=2",
        "model=i3d_tiny",
        "dataset=brushmnist_small",
        "model.input.frames=8",
        "model.input.size=32",
        "logger=none",
        "trainer.enable_progress_bar=false",
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
        f"hydra.run.dir={out}",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((out / "results.json").read_text())
    assert record["task"] == "explain" and record["method"] == "FrameOcclusion"
    assert record["settings"] == {"fill": "mean"} and record["num_clips"] == 3
    assert record["summary"]["drop"]["n"] == 3
    arrays = np.load(out / "frameocclusion.npz")
    assert arrays["drops"].shape == (3, 8) and list(arrays["index"]) == [0, 1, 2]
    np.testing.assert_allclose(arrays["drop"], arrays["drops"].mean(1), rtol=1e-6)
    mean = float(np.mean(arrays["drop"].astype(np.float64)))
    assert record["summary"]["drop"]["mean"] == pytest.approx(mean, rel=1e-9, abs=1e-15)
    table = stbias.results.load(out)
    assert table["task"].tolist() == ["explain"] and table["method"].tolist() == ["FrameOcclusion"]
    assert (out / "summary.png").exists() and (out / "results.csv").exists()
    assert (
        "FrameOcclusion of i3d_tiny on brushmnist_small, 3 clips: drop" in proc.stderr + proc.stdout
    )


def test_the_method_is_a_python_object_too(tmp_path, monkeypatch):
    (tmp_path / "occlusion_method.py").write_text(METHOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    from occlusion_method import FrameOcclusion

    torch.manual_seed(0)
    model = stbias.models.create("i3d_tiny", frames=8, size=32)
    clips = torch.randint(0, 256, (2, 8, 32, 32, 3), dtype=torch.uint8)
    res = FrameOcclusion(model, batch_size=2).run(clips)
    assert res.table()["drop"].shape == (2,) and res.plot().axes
    assert stbias.results.load(res.save(tmp_path / "run"))["method"].tolist() == ["FrameOcclusion"]
