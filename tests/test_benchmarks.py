"""The benchmarks run, at tiny sizes, so that they cannot rot; their bookkeeping is checked."""

from __future__ import annotations

import sys
from pathlib import Path

import av
import pytest

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
    assert f"= {out['ratio']:.3f}" in printed.splitlines()[-1]
