"""Hostile checkpoints, caches and a full disk, tried as a hostile user would: one table of cases.

Each row is a case, the command (``stbias <args>`` run in this process) and the class of outcome
expected: ``refused`` (exit 2, one line ``stbias: error: ...`` holding the given text), ``runs``
(exit 0). In every row no file outside the run folder is touched: victim files and a victim
folder beside the run survive, and no file ran code. A new surface that reads files from a user
gets its rows here.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from omegaconf import open_dict

from stbias import io
from stbias.cli import main as cli_main
from stbias.errors import StbiasError
from stbias.lit import checkpoints
from stbias.lit.checkpoints import RunCheckpointIO, inside, resume_state
from stbias.runner import run_task
from stbias.studies import base as study_base

QUIET = ["logger=none", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
# a training of a few seconds: i3d_tiny on 32 BrushMNIST clips of 8 frames, 32 pixels
TRAIN = [
    "task=train",
    "model=i3d_tiny",
    "dataset=brushmnist_small",
    "model.input.frames=8",
    "model.input.size=32",
    "train.train_clips=32",
    "train.val_clips=16",
    "trainer.num_sanity_val_steps=0",
    *QUIET,
]
VICTIMS = ("victim1.txt", "victim2.txt", "victim3.txt", "victims/kept.txt")


class Payload:
    """Unpickling this object runs ``os.system``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real training of one epoch: its folder and ``last.ckpt``."""
    folder = tmp_path_factory.mktemp("trained")
    cfg = compose_config(*TRAIN, "trainer.max_epochs=1")
    with open_dict(cfg):
        cfg.train.output_dir = str(folder)
    record, _ = run_task(cfg)
    return {"folder": folder, "last": Path(record["checkpoint"])}


def _edit(trained, target: Path, edit) -> Path:
    checkpoint = torch.load(trained["last"], weights_only=True)
    edit(checkpoint)
    torch.save(checkpoint, target)
    return target


def _callback_paths(run_dir: Path, dirpath: str | None = None, to: str = "../../..") -> Callable:
    """An edit setting every path of the checkpoint callback's state to ``<ckpt dir>/<to>/...``.

    Scores of -1 make the resumed run find a new best at once, so that Lightning replaces (and
    removes) the "previous" best and last checkpoints the state names.
    """
    ckpt_dir = str(run_dir / "checkpoints")

    def edit(checkpoint):
        callbacks = checkpoint["callbacks"]
        for key in list(callbacks):  # the same state for a run without validation (no monitor)
            callbacks[key.replace("'monitor': 'val/acc'", "'monitor': None")] = dict(callbacks[key])
        for key, state in callbacks.items():
            if key.startswith(checkpoints.CHECKPOINT_CALLBACKS):
                state["dirpath"] = dirpath or ckpt_dir
                state["best_model_path"] = f"{ckpt_dir}/{to}/victim1.txt"
                state["last_model_path"] = f"{ckpt_dir}/{to}/victim2.txt"
                state["kth_best_model_path"] = f"{ckpt_dir}/{to}/victim3.txt"
                state["best_k_models"] = {f"{ckpt_dir}/{to}/victim3.txt": torch.tensor(-1.0)}
                state["best_model_score"] = state["kth_value"] = torch.tensor(-1.0)

    return edit


def _folder_path(run_dir: Path) -> Callable:
    ckpt_dir = str(run_dir / "checkpoints")

    def edit(checkpoint):
        for key, state in checkpoint["callbacks"].items():
            if key.startswith(checkpoints.CHECKPOINT_CALLBACKS):
                state["dirpath"] = ckpt_dir
                state["last_model_path"] = f"{ckpt_dir}/../../../victims"  # rm -r would take it
                state["best_k_models"] = {f"{ckpt_dir}/../../../victims": torch.tensor(-1.0)}
                state["kth_best_model_path"] = f"{ckpt_dir}/../../../victims"
                state["best_model_score"] = state["kth_value"] = torch.tensor(-1.0)

    return edit


def _hparams(**input_values) -> Callable:
    def edit(checkpoint):
        checkpoint["hyper_parameters"]["input"].update(input_values)

    return edit


def _files(trained, base: Path) -> dict[str, Path]:
    """The hostile files of the table, written into ``base``."""
    run_dir = base / "x" / "y" / "run"
    marker = base / "ran.txt"
    files = {
        "dotdot": _edit(trained, base / "dotdot.ckpt", _callback_paths(run_dir)),
        "foreign": _edit(
            trained, base / "foreign.ckpt", _callback_paths(run_dir, dirpath=str(base / "else"))
        ),
        "folder": _edit(trained, base / "folder.ckpt", _folder_path(run_dir)),
        "frames": _edit(trained, base / "frames.ckpt", _hparams(frames=10**9)),
        "size": _edit(trained, base / "size.ckpt", _hparams(size=10**6)),
        "channels": _edit(trained, base / "channels.ckpt", _hparams(channels=7)),
        "weights": base / "weights.pt",
        "system_zip": base / "system.ckpt",
        "system_raw": base / "system.pkl",
    }
    torch.save(torch.load(trained["last"], weights_only=True)["state_dict"], files["weights"])
    torch.save({"state_dict": {}, "x": Payload(f"touch {marker}")}, files["system_zip"])
    with open(files["system_raw"], "wb") as fh:
        pickle.dump({"state_dict": Payload(f"touch {marker}")}, fh, protocol=4)
    return files


CODE = "would run code when unpickled (it names posix.system)"
# case, arguments (beyond TRAIN for task=train rows), expected class, text of the refusal line
CASES = [
    (
        "callback paths with .. (best, last, kth)",
        ["train.resume={dotdot}", "trainer.max_epochs=3"],
        "runs",
        None,
    ),
    (
        "callback state of another folder naming ours/..",
        ["train.resume={foreign}", "train.val_split=null", "trainer.max_epochs=3"],
        "runs",
        None,
    ),
    (
        "callback paths naming a folder (rm -r)",
        ["train.resume={folder}", "trainer.max_epochs=3"],
        "runs",
        None,
    ),
    (
        "resume with another class count",
        ["train.resume={dotdot}", "train.num_classes=5"],
        "refused",
        "trained for 100 classes, this run has 5",
    ),
    (
        "resume with another model",
        ["train.resume={dotdot}", "model=c2d_tiny"],
        "refused",
        "does not fit this run's network",
    ),
    (
        "resume from a weights-only file",
        ["train.resume={weights}"],
        "refused",
        "holds weights only",
    ),
    ("resume from an os.system pickle (torch zip)", ["train.resume={system_zip}"], "refused", CODE),
    (
        "weights from an os.system pickle (plain pickle)",
        ["task=probe", "model.checkpoint={system_raw}"],
        "refused",
        CODE,
    ),
    (
        "checkpoint asking for 10**9 frames",
        ["task=probe", "model.checkpoint={frames}"],
        "refused",
        "input.frames=1000000000 is out of range; frames takes 1..256",
    ),
    (
        "checkpoint asking for 10**6 pixels a side",
        ["task=probe", "model.checkpoint={size}"],
        "refused",
        "input.size=1000000 is out of range",
    ),
    (
        "checkpoint asking for 7 channels",
        ["task=probe", "model.checkpoint={channels}"],
        "refused",
        "channels takes 1 or 3",
    ),
]


def _victims(base: Path) -> None:
    (base / "x" / "victims").mkdir(parents=True, exist_ok=True)
    for name in VICTIMS:
        (base / "x" / name).write_text("keep me")


def run_cli(args, run_dir: Path, monkeypatch, capsys) -> tuple[int, str]:
    """``stbias <args>`` in this process: its exit code and what it wrote to stderr."""
    monkeypatch.chdir(run_dir.parent)
    monkeypatch.setattr(sys, "argv", ["stbias", *args, f"hydra.run.dir={run_dir}"])
    code = 0
    try:
        cli_main()
    except SystemExit as done:
        code = done.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", range(len(CASES)), ids=[c[0] for c in CASES])
def test_hostile_case(case, trained, tmp_path, monkeypatch, capsys):
    name, args, expected, text = CASES[case]
    files = _files(trained, tmp_path)
    _victims(tmp_path)
    run_dir = tmp_path / "x" / "y" / "run"
    run_dir.mkdir(parents=True)
    args = [a.format(**{k: str(v) for k, v in files.items()}) for a in args]
    base = TRAIN if not any(a.startswith("task=") for a in args) else ["model=i3d_tiny", *QUIET]
    given = {a.split("=", 1)[0] for a in args}
    base = [a for a in base if a.split("=", 1)[0] not in given]  # a row's own model, ...
    code, err = run_cli([*base, *args], run_dir, monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    if expected == "refused":
        assert code == 2, (name, err[-2000:])
        assert len(lines) == 1 and lines[0].startswith("stbias: error: "), lines
        assert text in lines[0], (text, lines[0])
        assert "weights_only" not in lines[0]  # never the advice to unpickle code
    else:
        assert code == 0, (name, err[-3000:])
        assert (run_dir / "results.json").is_file()
    for victim in VICTIMS:
        assert (tmp_path / "x" / victim).read_text() == "keep me", (name, victim)
    assert not (tmp_path / "ran.txt").exists()


def test_a_training_cache_resuming_on_its_own_from_a_planted_checkpoint_deletes_nothing(
    compose, trained, tmp_path
):
    """The quickstart, Mänttäri and VOS caches resume ``<folder>/checkpoints/last.ckpt`` found
    in a predictable folder: one planted there with crafted paths deletes nothing either."""
    folder = tmp_path / "x" / "y" / "cache"
    (folder / "checkpoints").mkdir(parents=True)
    _victims(tmp_path)
    _edit(trained, folder / "checkpoints" / "last.ckpt", _callback_paths(folder))
    record = study_base.train_once(compose(*TRAIN, "trainer.max_epochs=3"), str(folder), "planted")
    assert record["epochs"] == 3 and os.path.isfile(record["checkpoint"])
    for victim in VICTIMS:
        assert (tmp_path / "x" / victim).read_text() == "keep me", victim


def test_the_crafted_checkpoint_deletes_files_without_the_run_folder_io(
    compose, trained, tmp_path, monkeypatch
):
    """Control: the crafted file is potent; with Lightning's own checkpoint I/O it deletes."""
    files = _files(trained, tmp_path)
    _victims(tmp_path)
    run_dir = tmp_path / "x" / "y" / "run"
    run_dir.mkdir(parents=True)

    def unchecked(self, path, map_location=None, weights_only=None):
        return torch.load(path, weights_only=True)

    monkeypatch.setattr(RunCheckpointIO, "load_checkpoint", unchecked)
    monkeypatch.setattr(
        RunCheckpointIO, "save_checkpoint", checkpoints.TorchCheckpointIO.save_checkpoint
    )
    monkeypatch.setattr(
        RunCheckpointIO, "remove_checkpoint", checkpoints.TorchCheckpointIO.remove_checkpoint
    )
    cfg = compose(*TRAIN, f"train.resume={files['dotdot']}", "trainer.max_epochs=3")
    with open_dict(cfg):
        cfg.train.output_dir = str(run_dir)
    run_task(cfg)
    gone = [v for v in VICTIMS if not (tmp_path / "x" / v).exists()]
    # the previous last.ckpt (victim1) and the replaced k-th best (victim3)
    assert gone == ["victim1.txt", "victim3.txt"]


def test_a_legitimate_resume_keeps_tracking_the_best_checkpoint(trained, tmp_path):
    state = resume_state(
        torch.load(trained["last"], weights_only=True),
        str(trained["last"]),
        str(trained["folder"] / "checkpoints"),
    )
    assert set(state) <= set(checkpoints.RESUMED_KEYS) and "hyper_parameters" not in state
    states = state["callbacks"]
    best_key = next(k for k in states if k.startswith("BestCheckpoint"))
    final_key = next(k for k in states if k.startswith("FinalCheckpoint"))
    real = os.path.realpath(trained["folder"] / "checkpoints")
    assert states[best_key]["best_model_path"] == os.path.join(real, "best.ckpt")
    assert states[final_key]["best_model_path"] == os.path.join(real, "last.ckpt")
    assert "ResumeState" in states  # the random streams travel: they name no path
    # another run's folder: the checkpoint callbacks' state is dropped, the rest is kept
    elsewhere = resume_state(
        torch.load(trained["last"], weights_only=True), "x.ckpt", str(tmp_path / "checkpoints")
    )
    assert set(elsewhere["callbacks"]) == {"ResumeState"}
    assert elsewhere["global_step"] == state["global_step"]
    for bad in (os.path.join(real, ".."), os.path.join(real, "x", ".."), "memory://last.ckpt"):
        checkpoint = torch.load(trained["last"], weights_only=True)
        checkpoint["callbacks"][best_key]["last_model_path"] = bad
        assert best_key not in resume_state(checkpoint, "x.ckpt", real)["callbacks"], bad
    # inside the folder but inconsistent (Lightning would raise KeyError later): dropped too
    checkpoint = torch.load(trained["last"], weights_only=True)
    checkpoint["callbacks"][best_key]["kth_best_model_path"] = os.path.join(real, "other.ckpt")
    assert best_key not in resume_state(checkpoint, "x.ckpt", real)["callbacks"]


def test_checkpoints_name_their_files_relative_so_a_moved_run_folder_resumes(trained, tmp_path):
    """The checkpoint callbacks' paths are written relative to the checkpoint folder (so the
    bytes do not depend on where the run lies); a moved folder's checkpoint resumes with them,
    read inside its new folder."""
    written = torch.load(trained["last"], weights_only=True)["callbacks"]
    best_key = next(k for k in written if k.startswith("BestCheckpoint"))
    assert written[best_key]["dirpath"] == "."
    assert written[best_key]["best_model_path"] == "best.ckpt"
    assert list(written[best_key]["best_k_models"]) == ["best.ckpt"]
    moved = tmp_path / "moved"
    shutil.copytree(trained["folder"], moved)
    last = moved / "checkpoints" / "last.ckpt"
    state = resume_state(torch.load(last, weights_only=True), str(last), str(last.parent))
    real = os.path.realpath(last.parent)
    assert state["callbacks"][best_key]["best_model_path"] == os.path.join(real, "best.ckpt")
    assert state["callbacks"][best_key]["dirpath"] == real
    # the original folder's file read into the moved run: another folder's state, dropped
    original = torch.load(trained["last"], weights_only=True)
    other = resume_state(original, str(trained["last"]), str(last.parent))
    assert best_key not in other["callbacks"]


def test_callback_state_naming_paths_is_dropped(tmp_path, caplog):
    checkpoint = {
        "state_dict": {"w": torch.zeros(1)},
        "optimizer_states": [],
        "loops": {},
        "global_step": 3,
        "callbacks": {"Mine": {"folder": "/etc"}, "Counts": {"n": 3}},
        "hyper_parameters": {"input": {"frames": 10**9}},
    }
    caplog.set_level(logging.WARNING)
    state = resume_state(checkpoint, "c.ckpt", str(tmp_path))
    assert state["callbacks"] == {"Counts": {"n": 3}}
    assert "hyper_parameters" not in state
    assert "callback Mine: it names paths" in caplog.text


def test_the_run_folder_io_writes_and_removes_only_inside(tmp_path, caplog):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    outside = tmp_path / "victim.txt"
    outside.write_text("keep me")
    (tmp_path / "victims").mkdir()
    (tmp_path / "victims" / "a.txt").write_text("keep me")
    (tmp_path / "elsewhere").mkdir()
    (run / "checkpoints" / "link").symlink_to(tmp_path / "elsewhere")
    checkpoint_io = RunCheckpointIO(str(run), str(run / "checkpoints"))
    caplog.set_level(logging.WARNING)
    for path in (
        run / "checkpoints" / ".." / ".." / "victim.txt",
        tmp_path / "victims",
        run / "checkpoints" / ".." / ".." / "victims",
        run / "checkpoints" / "link" / ".." / "victim.txt",
    ):
        checkpoint_io.remove_checkpoint(str(path))
    assert outside.read_text() == "keep me" and (tmp_path / "victims" / "a.txt").exists()
    assert caplog.text.count("a run removes only its own checkpoint files") == 4
    with pytest.raises(StbiasError, match="outside the run folder"):
        checkpoint_io.save_checkpoint({"x": 1}, str(run / "checkpoints" / "link" / "x.ckpt"))
    assert not (tmp_path / "elsewhere" / "x.ckpt").exists()
    checkpoint_io.save_checkpoint({"x": 1}, str(run / "checkpoints" / "last.ckpt"))
    checkpoint_io.remove_checkpoint(str(run / "checkpoints" / "last.ckpt"))
    assert not (run / "checkpoints" / "last.ckpt").exists()
    assert inside(run / "checkpoints" / "a.ckpt", run)
    assert not inside(run / "checkpoints" / ".." / ".." / "a.ckpt", run)
    assert not inside("memory://run/a.ckpt", run) and not inside(run, run)


# --- a full disk ---------------------------------------------------------------------------------


def _full_under(folder: Path, monkeypatch, name: str | None = None) -> None:
    """``os.replace`` into ``folder`` (or onto a file called ``name`` there) fails: ENOSPC."""
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        target = os.path.abspath(os.fspath(dst))
        if target.startswith(str(folder) + os.sep) and (name is None or target.endswith(name)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), target)
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_no_partial_file(tmp_path, monkeypatch):
    _full_under(tmp_path, monkeypatch)
    with pytest.raises(io.WriteError, match=r"cannot write '.*r\.json': no space left") as err:
        io.write_json(tmp_path / "r.json", {"a": 1})
    assert err.value.path == str(tmp_path / "r.json") and len(str(err.value).splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_task_train_on_a_full_disk_stops_with_one_line(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    _full_under(run_dir, monkeypatch, name="results.json")
    code, err = run_cli([*TRAIN, "trainer.max_epochs=1"], run_dir, monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, lines
    assert f"cannot write '{run_dir / 'results.json'}': no space left" in lines[0]


def test_the_probe_keeps_its_results_when_the_state_cache_is_full(
    compose, tmp_path, monkeypatch, caplog
):
    cache = tmp_path / "cache"
    _full_under(cache, monkeypatch)
    cfg = compose(
        "model=i3d_tiny",
        "probe.num_clips=4",
        "probe.batch_size=2",
        "probe.save_every=1",
        "probe.bootstrap=0",
        f"probe.cache_dir={cache}",
        *QUIET,
    )
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.WARNING)
    record, *_ = run_task(cfg)
    assert (tmp_path / "results.json").is_file() and set(record["layers"]) >= {"res2", "res4"}
    warnings = [r.getMessage() for r in caplog.records if "no space left" in r.getMessage()]
    assert warnings and all(str(cache) in w and "without caching" in w for w in warnings)
    assert len(warnings) <= 2  # once for the partial sums, once for the final ones
    assert not [p for p in cache.rglob("*.pt")]


def test_a_training_cache_on_a_full_disk_returns_the_training(
    compose, tmp_path, monkeypatch, caplog
):
    folder = tmp_path / "cache" / "c2d"
    cfg = compose(*TRAIN, "trainer.max_epochs=1")
    _full_under(folder, monkeypatch, name="results.json")
    caplog.set_level(logging.WARNING)
    record = study_base.train_once(cfg, str(folder), "c2d")
    assert os.path.isfile(record["checkpoint"]) and record["epochs"] == 1
    assert f"cannot write '{folder / 'results.json'}': no space left" in caplog.text
    assert not (folder / "results.json").exists()


def test_a_broken_training_cache_entry_is_trained_again(tmp_path, trained, caplog):
    folder = tmp_path / "cache"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "results.json").write_text("{broken")
    caplog.set_level(logging.WARNING)
    assert study_base._cached_training(str(folder / "results.json"), str(folder), "c2d") == (
        None,
        True,
    )
    assert f"cannot read the cached training {folder / 'results.json'}" in caplog.text
    # a record naming a checkpoint outside the cache folder is not reused either
    io.write_json(folder / "results.json", {"checkpoint": str(trained["last"])})
    assert study_base._cached_training(str(folder / "results.json"), str(folder), "c2d") == (
        None,
        False,
    )
    assert "names a checkpoint outside" in caplog.text
    (folder / "checkpoints" / "last.ckpt").write_bytes(trained["last"].read_bytes())
    io.write_json(folder / "results.json", {"checkpoint": str(folder / "checkpoints/last.ckpt")})
    record, damaged = study_base._cached_training(str(folder / "results.json"), str(folder), "c2d")
    assert record["checkpoint"] and not damaged


def test_a_corrupt_cached_training_is_picked_up_again_with_one_warning(compose, tmp_path, caplog):
    folder = tmp_path / "cache" / "i3d"
    cfg = compose(*TRAIN, "trainer.max_epochs=1")
    first = study_base.train_once(cfg, str(folder), "i3d")
    (folder / "results.json").write_text('{"checkpoint": ')  # torn by hand
    caplog.set_level(logging.WARNING)
    again = study_base.train_once(compose(*TRAIN, "trainer.max_epochs=1"), str(folder), "i3d")
    assert f"cannot read the cached training {folder / 'results.json'}" in caplog.text
    assert again["checkpoint"] == first["checkpoint"] and os.path.isfile(again["checkpoint"])
    assert json.loads((folder / "results.json").read_text())["checkpoint"] == again["checkpoint"]


def test_refused_published_weights_never_pass_on_the_weights_only_false_advice(
    tmp_path, monkeypatch
):
    from stbias.models import weights

    path = tmp_path / "hub.pth"
    torch.save({"w": torch.zeros(1), "x": Payload(f"touch {tmp_path / 'ran.txt'}")}, path)
    monkeypatch.setattr(
        torch.hub, "load_state_dict_from_url", lambda url, **kw: torch.load(path, weights_only=True)
    )
    with pytest.raises(StbiasError) as err:
        weights.download_state("https://example.org/hub.pth", "i3d")
    message = str(err.value)
    assert "would run code" in message and "posix.system" in message
    assert "weights_only" not in message and len(message.splitlines()) == 1
    assert not (tmp_path / "ran.txt").exists()


def test_a_run_folder_full_from_the_start_is_one_line(tmp_path, monkeypatch, capsys):
    from omegaconf import OmegaConf

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(OmegaConf, "to_yaml", full)  # Hydra's .hydra/config.yaml
    code, err = run_cli(["model=i3d_tiny", *QUIET], tmp_path / "run", monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, lines
    assert f"cannot write '{tmp_path / 'run' / '.hydra'}" in lines[0] and "No space" in lines[0]


def test_a_run_log_that_cannot_be_written_is_one_warning(tmp_path, capsys):
    from stbias.reporting import RunLogFile

    class Full:
        def write(self, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def flush(self):
            pass

        def close(self):
            pass

    handler = RunLogFile(str(tmp_path / "stbias.log"))
    handler._open = Full  # the disk is full when the file is first written
    logger = logging.getLogger("stbias.test_full_log")
    logger.addHandler(handler)
    try:
        for i in range(3):
            logger.warning("message %d", i)
    finally:
        logger.removeHandler(handler)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write the run's log" in err and "No space" in err
