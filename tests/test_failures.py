"""Bad input, hostile files and failures: one line and exit 2, nothing run from a file, no stale,
lost or unreadable results."""

from __future__ import annotations

import http.server
import os
import pathlib
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config

from stbias import io
from stbias.cli import main as cli_main
from stbias.errors import StbiasError
from stbias.runner import run_task
from stbias.tasks.model_setup import build_model, checkpoint_settings

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["logger=none", "trainer.enable_progress_bar=false"]


class Armed:
    """Unpickling this object creates a marker file."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def run_cli(args, tmp_path, monkeypatch, capsys):
    """``stbias <args>`` in this process: its exit code and what it wrote to stderr."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["stbias", *args, f"hydra.run.dir={tmp_path / 'run'}"])
    code = 0
    try:
        cli_main()
    except SystemExit as done:
        code = done.code
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Hostile and broken files, written once."""
    folder = tmp_path_factory.mktemp("files")
    torch.manual_seed(0)
    state = build_model(compose_config("model=i3d_tiny").model).state_dict()
    marker = folder / "ran.txt"
    torch.save({"state_dict": state, "extra": Armed(marker)}, folder / "evil.ckpt")
    (folder / "garbage.pt").write_bytes(b"not a torch file at all")
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in state.items()},
            "hyper_parameters": {
                "model_overrides": {
                    "builder": {
                        "num_classes": 10,
                        "norm": {
                            "_target_": "pathlib.Path.write_text",
                            "self": {"_target_": "pathlib.Path", "_args_": [str(folder / "x")]},
                            "data": "written by a checkpoint",
                        },
                    }
                }
            },
        },
        folder / "injected.ckpt",
    )
    return {"dir": folder, "marker": marker}


def _rows(files):
    d = files["dir"]
    return [
        (["metric.lam=abc"], "metric.lam='abc' is not valid"),
        (["metric.lam=1.5"], "metric.lam takes a number in (-1, 1)"),
        (["metric.lam=-1"], "metric.lam=-1 is not valid"),
        (["probe.num_clips=0"], "probe.num_clips=0 is not valid"),
        (["probe.num_clips=-3"], "probe.num_clips=-3 is not valid"),
        (["probe.num_clips=abc"], "probe.num_clips takes an integer >= 1 or null"),
        (["probe.batch_size=0"], "probe.batch_size=0"),
        (["probe.bootstrap=-1"], "probe.bootstrap=-1"),
        (["probe.sampling=foo"], "probe.sampling takes one of stratified, random, first"),
        (["metric.estimator=median"], "metric.estimator takes one of pooled, mean_corr"),
        (["seed=-1"], "seed=-1 is not valid"),
        (["verbose=maybe"], "verbose takes true or false"),
        (["trainer.max_epochs=abc"], "trainer.max_epochs='abc'"),
        (["model.input.channels=2"], "model.input.channels takes one of 1, 3"),
        (["model=i3d_tiny", "probe.layers=[res9]"], "unknown layer 'res9'; layers of i3d_tiny"),
        (["model=i3d", "dataset=ssv2"], "ssv2: dataset.root is not set"),
        (["model=i3d", "dataset=ssv2", "dataset.root=/nowhere"], "root '/nowhere' not found"),
        (["model=i3d_tiny", "dataset.size=32"], "dataset.size=32 conflicts with model.input."),
        (["model=i3d_tiny", "model.input.short_side=16"], "short_side=16 is smaller than"),
        (["model=i3d_inception", "model.pretrained=true"], "has no published weights"),
        (["model=i3d_tiny", "model.checkpoint=/nowhere.pt"], "/nowhere.pt"),
        (["model=i3d_tiny", "model.checkpoint=http://127.0.0.1:9/w.pt"], "is a URL"),
        (["model=i3d_tiny", f"model.checkpoint={d / 'garbage.pt'}"], "not a readable torch file"),
        (["model=i3d_tiny", f"model.checkpoint={d / 'evil.ckpt'}"], "would run code"),
        (["model=i3d_tiny", f"model.checkpoint={d / 'injected.ckpt'}"], "refused checkpoint"),
        (["model=custom"], "model custom declares no layers to probe"),
        (["model=i3d_tiny", "stylization=precomputed"], "stylization.stylizer.root"),
        (["task=train"], "names several models"),
        (["metric=asdt"], "metric=asdt takes one"),
        (["model=i3d_tiny", "task=probe", "metric=asdt"], "metric=asdt runs in task=weights"),
        (["metric=asdt", "model=i3d_tiny", "metric.rule=foo"], "metric.rule takes one of"),
        (["model=i3d_tiny", "+trainer.logger=true"], "trainer.logger is not set through"),
        (["model=i3d_tiny", "+trainer.callbacks=[1]"], "trainer.callbacks must be a list"),
        (["task=train", "model=i3d_tiny", "train.batch_size=0"], "train.batch_size=0"),
        (["task=train", "model=i3d_tiny", "train.resume=http://127.0.0.1:9/x.ckpt"], "is a URL"),
        (["model.checkpoint=/x.ckpt"], "task=quickstart trains its models from initialisation"),
        (["task=scene_bias", "task.linear_probe.fine_tune.lr=0"], "fine_tune.lr=0 is not valid"),
        (
            ["task=scene_bias", "task.linear_probe.models=[{model: c2d_tiny, inflat: 3}]"],
            "task.linear_probe.models[0].inflat is not a setting; task.linear_probe.models[0] "
            "takes label, model, checkpoint,",
        ),
    ]


def test_the_table_has_enough_rows(files):
    assert len(_rows(files)) >= 25


@pytest.mark.parametrize("row", range(38))
def test_bad_input_stops_with_one_line_and_exit_2(row, files, tmp_path, monkeypatch, capsys):
    args, message = _rows(files)[row]
    code, err = run_cli([*args, *QUIET], tmp_path, monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (args, err[-2000:])
    assert len(lines) == 1 and lines[0].startswith("stbias: error: "), lines
    assert message in lines[0], (message, lines[0])
    assert not files["marker"].exists()  # no file ran code
    assert not (files["dir"] / "x").exists()


def test_config_injection_through_a_checkpoint_is_refused_and_nothing_is_written(files):
    with pytest.raises(StbiasError, match=r"model_overrides\.builder\.norm"):
        checkpoint_settings(files["dir"] / "injected.ckpt")
    assert not (files["dir"] / "x").exists()
    # control: the same values handed to hydra's instantiate would have written the file
    from hydra.utils import instantiate

    payload = io.load_tensors(files["dir"] / "injected.ckpt")
    target = files["dir"] / "control.txt"
    node = payload["hyper_parameters"]["model_overrides"]["builder"]["norm"]
    instantiate({**node, "self": {**node["self"], "_args_": [str(target)]}})
    assert target.read_text() == "written by a checkpoint"


class _Serve(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_train_resume_never_unpickles_code_from_a_url_or_under_the_env_override(
    compose, files, tmp_path, monkeypatch
):
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: _Serve(*a, directory=str(files["dir"]))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/evil.ckpt"
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.chdir(tmp_path)
    try:
        for resume in (url, str(files["dir"] / "evil.ckpt")):
            cfg = compose("task=train", "model=i3d_tiny", f"train.resume={resume}", *QUIET)
            with pytest.raises(StbiasError, match="URL|would run code"):
                run_task(cfg)
    finally:
        server.shutdown()
    assert not files["marker"].exists()


def test_torch_load_is_called_in_one_place_only():
    callers = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "stbias").rglob("*.py")
        if "torch.load(" in p.read_text()
    ]
    assert callers == ["stbias/io.py"]


def _probe_cfg(compose, tmp_path, *overrides):
    return compose(
        "model=i3d_tiny",
        "probe.num_clips=4",
        "probe.batch_size=4",
        f"probe.cache_dir={tmp_path / 'cache'}",
        *QUIET,
        *overrides,
    )


def _write_video_folder(root, n=4, frames=12, size=24):
    import av

    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        path = root / f"v{i}.mp4"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("mpeg4", rate=10)
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            rng = np.random.default_rng(i)
            for t in range(frames):
                image = np.zeros((size, size, 3), np.uint8)
                image[:, (t * 2) % size] = 255
                image[..., 1] = rng.integers(0, 255)
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        rows.append(f"v{i}.mp4,{i % 2}")
    (root / "train.csv").write_text("\n".join(rows) + "\n")


def test_the_cache_follows_the_files_not_only_the_config(compose, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "videos"
    _write_video_folder(data)
    args = [
        "dataset=video_folder",
        f"dataset.root={data}",
        "model.input.size=24",
        "model.input.frames=4",
        "probe.sampling=first",
    ]
    first, _ = run_task(_probe_cfg(compose, tmp_path, *args))
    again, _ = run_task(_probe_cfg(compose, tmp_path, *args))
    assert again["cache"]["clips_run"] == 0  # unchanged files: the cached sums
    csv = data / "train.csv"
    csv.write_text(csv.read_text().replace("v3.mp4", "v0.mp4"))  # an edited annotation file
    edited, _ = run_task(_probe_cfg(compose, tmp_path, *args))
    assert edited["cache"]["key"] != first["cache"]["key"] and edited["cache"]["clips_run"] == 4
    os.utime(data / "v1.mp4", ns=(1, 1))  # a replaced video
    replaced, _ = run_task(_probe_cfg(compose, tmp_path, *args))
    assert replaced["cache"]["key"] != edited["cache"]["key"]


@pytest.mark.parametrize("damage", ["garbage", "empty", "truncated", "other_units"])
def test_a_bad_cache_file_is_named_and_computed_again(
    compose, damage, tmp_path, monkeypatch, caplog
):
    monkeypatch.chdir(tmp_path)
    first, _ = run_task(_probe_cfg(compose, tmp_path))
    (layer_file,) = (tmp_path / "cache" / first["cache"]["key"]).glob("res3-*.pt")
    if damage == "garbage":
        layer_file.write_bytes(b"\x00garbage")
    elif damage == "empty":
        layer_file.write_bytes(b"")
    elif damage == "truncated":
        layer_file.write_bytes(layer_file.read_bytes()[:100])
    else:
        (other,) = (tmp_path / "cache" / first["cache"]["key"]).glob("res4-*.pt")
        layer_file.write_bytes(other.read_bytes())  # 128 units where res3 has 64
    again, _ = run_task(_probe_cfg(compose, tmp_path))
    warned = [r.getMessage() for r in caplog.records if str(layer_file) in r.getMessage()]
    assert len(warned) == 1 and "computing them again" in warned[0]
    assert again["cache"]["layers_from_cache"] == ["res2", "res4", "stem"]
    assert again["layers"]["res3"]["scores"] == pytest.approx(first["layers"]["res3"]["scores"])


def test_damaged_partial_sums_are_named_and_ignored(compose, tmp_path, monkeypatch, caplog):
    from stbias.lit.probe import ProbeModule

    monkeypatch.chdir(tmp_path)
    reference, _ = run_task(_probe_cfg(compose, tmp_path / "a"))
    original = ProbeModule._partial_path
    folder = {}

    def partial_path(self):
        path = original(self)
        if path and "written" not in folder:
            folder["written"] = path
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(b"\x80\x04junk")  # a half-written file from a crash
        return path

    monkeypatch.setattr(ProbeModule, "_partial_path", partial_path)
    again, _ = run_task(_probe_cfg(compose, tmp_path / "b"))
    assert [r for r in caplog.records if "ignoring the partial sums" in r.getMessage()]
    assert again["layers"]["res4"]["scores"] == pytest.approx(reference["layers"]["res4"]["scores"])


def test_two_runs_started_at_once_get_their_own_folders(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    command = [sys.executable, str(ROOT / "run.py"), "task=layers", "model=c2d_tiny"]
    procs = [
        subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stderr.read()[-2000:]
    runs = sorted((tmp_path / "outputs").glob("*/*"))
    assert len(runs) == 2 and all((r / ".hydra" / "config.yaml").exists() for r in runs)


def test_results_are_readable_by_others_as_the_umask_allows(tmp_path):
    old = os.umask(0o022)
    try:
        io.write_json(tmp_path / "r.json", {"a": 1})
        assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        io.write_json(tmp_path / "s.json", {"a": 1})
        assert (tmp_path / "s.json").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_a_frame_folder_with_frames_of_several_sizes_is_resized_and_named(tmp_path, caplog):
    import cv2

    from stbias.data import frame_folder

    for v in ("a", "b"):
        (tmp_path / v).mkdir()
        for t in range(6):
            size = (40, 30) if (v == "b" and t % 2) else (32, 24)
            cv2.imwrite(str(tmp_path / v / f"{t:05d}.jpg"), np.full((*size, 3), 40 * t, np.uint8))
    data = frame_folder(str(tmp_path), num_frames=6, size=16)
    clips = [data[i]["video"] for i in range(2)]
    assert all(c.shape == (6, 16, 16, 3) for c in clips)
    assert [r for r in caplog.records if "frames of" in r.getMessage() and "/b" in r.getMessage()]


def test_a_layer_that_gives_nan_stops_the_run_naming_it(compose, tmp_path, monkeypatch):
    from stbias.models import tiny

    real = tiny.i3d_tiny

    def broken(**kwargs):
        model = real(**kwargs)
        model.stages[1].register_forward_hook(lambda m, i, out: out * float("nan"))
        return model

    monkeypatch.setattr(tiny, "i3d_tiny", broken)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StbiasError, match=r"layer res3 of i3d_tiny gave NaN"):
        run_task(_probe_cfg(compose, tmp_path))
    assert not list(tmp_path.rglob("results.json"))


def test_the_docs_describe_security_and_failure_behaviour():
    text = (ROOT / "docs" / "security.md").read_text()
    for phrase in ("weights_only", "skipped and counted", "cache key", "URL", "umask"):
        assert re.search(phrase, text, re.I), phrase
