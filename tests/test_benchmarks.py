"""The benchmarks run, at tiny sizes, so that they cannot rot; their bookkeeping is checked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_end_to_end_writes_real_videos_and_accounts_for_every_stage(tmp_path, capsys):
    import end_to_end

    out = end_to_end.main(
        [
            "--clips=3",
            "--videos=2",
            "--frames=30",
            "--repeats=1",
            f"--data={tmp_path}",
            "model=i3d_tiny",
            "model.input.size=32",
            "model.input.frames=4",
            "model.input.sampling_rate=2",
            "probe.batch_size=2",
            "dataset.num_workers=1",
            "probe.stylize_on=device",
            "--variant=probe.stylize_on=loader",
        ]
    )
    # the files are what a dataset release holds: VP9 webm and H.264 mp4 at their sizes
    files = sorted(tmp_path.glob("*_30.*"))
    assert [f.name for f in files] == ["kinetics_001_30.mp4", "ssv2_000_30.webm"]
    for path, (codec, width, height) in zip(files, [("h264", 640, 360), ("vp9", 427, 240)]):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            found = (stream.codec_context.name, stream.width, stream.height)
            assert found == (codec, width, height)
            assert sum(1 for _ in container.decode(stream)) == 30
    assert out["clips"] == 3
    # every stage took time, the stages add up to the steps, the steps and waits to the run
    for stage in ("decode_alone", "load", "stylize", "pack", "forward", "statistics", "bare"):
        assert out[stage] > 0, stage
    steps = out["stylize"] + out["pack"] + out["forward"] + out["statistics"]
    assert steps == pytest.approx(out["step"])
    assert out["step"] + out["wait"] <= out["total"] * 1.001
    assert out["ratio"] == pytest.approx(out["total"] / out["bare"])
    printed = capsys.readouterr().out
    assert "num_workers 1" in printed and "waiting for data" in printed
    (variant,) = [line for line in printed.splitlines() if line.startswith("variant ")]
    assert variant.startswith("variant probe.stylize_on=loader: probe from files")
    assert float(variant.split("ratio ")[1]) > 0
    assert f"= {out['ratio']:.3f}" in printed.splitlines()[-1]


@pytest.mark.slow
def test_gpu_script_runs_its_cpu_path_and_prints_one_table(tmp_path):
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--cpu-smoke"],
        env={**os.environ, "GPU_BENCH_LOGS": str(tmp_path), "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    table = proc.stdout.splitlines()
    assert table[0].split() == ["ratio", "setting", "value"]
    rows = "\n".join(table[1:-1])
    for what in (
        "probe / bare forward",
        "probe from files / bare forward",
        "loop of single-clip masks / batched",
        "authors' procedure (as released) / stbias",
    ):
        assert what in rows, what
    # every row holds a measured ratio (a failed step would show "-")
    assert all(float(line.split()[-1]) > 0 for line in table[1:-1])
    assert table[-1] == f"full output: {tmp_path}"


def test_gpu_script_refuses_unknown_options_and_a_machine_without_cuda(tmp_path):
    env = {**os.environ, "GPU_BENCH_LOGS": str(tmp_path), "PYTHON": sys.executable}
    script = str(ROOT / "benchmarks" / "gpu.sh")
    proc = subprocess.run(["bash", script, "--fast"], env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown option '--fast'; valid: --cpu-smoke" in proc.stderr
    if not torch.cuda.is_available():
        proc = subprocess.run(["bash", script], env=env, capture_output=True, text=True)
        assert proc.returncode == 2 and "no CUDA device here" in proc.stderr
