"""Resuming a training from a checkpoint file without letting the file act on the disk.

A Lightning checkpoint carries, besides weights and optimizer state, the state of the run's
callbacks: :class:`~pytorch_lightning.callbacks.ModelCheckpoint` keeps the paths of the best and
last checkpoints, and removes the "previous" one when it saves the next. Lightning checks that
path against the checkpoint folder without resolving ``..``, so a checkpoint whose state says
``<run>/checkpoints/../../victim.txt`` would have a resumed run delete that file.

Here what a resumed run takes from the file is only its weights, optimizer and scheduler state and
loop counters (:func:`resume_state`); callback state that names paths is kept only when every path
lies, resolved, in the run's checkpoint folder, and dropped otherwise. Every checkpoint the run
writes or removes goes through :class:`RunCheckpointIO`, which checks the resolved path against
the run folder and writes atomically.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

from stbias.errors import StbiasError
from stbias.io import load_tensors, torch_save

log = logging.getLogger(__name__)

# What a resumed run takes from a checkpoint: weights, optimizer and scheduler state, the loops'
# counters, the mixed-precision scaler, the format version (for Lightning's own migrations) and
# the callbacks' state as filtered by _callback_states.
RESUMED_KEYS = (
    "state_dict",
    "optimizer_states",
    "lr_schedulers",
    "loops",
    "epoch",
    "global_step",
    "pytorch-lightning_version",
    "MixedPrecision",
    "native_amp_scaling_state",
    "callbacks",
)


class RunModelCheckpoint(ModelCheckpoint):
    """A ``ModelCheckpoint`` that a resumed run restores whole.

    Lightning's own leaves ``current_score`` (the last monitored score it saved on) out of its
    restored state, so a resumed run whose later epochs do not improve writes ``None`` where an
    uninterrupted one writes the score: the weights agree, the checkpoint bytes do not.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Lightning's restore, and ``current_score`` when the folder is this callback's."""
        super().load_state_dict(state_dict)
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:
            self.current_score = state_dict.get("current_score", self.current_score)


class FinalCheckpoint(RunModelCheckpoint):
    """``last.ckpt`` after every epoch; its own class keeps its state apart from the other
    monitor-less checkpoint callbacks (a series with ``checkpoint_every=1``)."""


class BestCheckpoint(RunModelCheckpoint):
    """``best.ckpt``: the epoch with the highest monitored score."""


def final_and_best_checkpoints(
    folder: str, monitor: str | None
) -> tuple[ModelCheckpoint, ModelCheckpoint | None]:
    """``last.ckpt`` (the weights after every epoch, so the final ones) and ``best.ckpt``.

    Two callbacks: Lightning's own ``save_last`` writes ``last.ckpt`` only when the monitored
    score improves, which would leave the best epoch in it. ``best.ckpt`` (highest ``monitor``)
    exists only with a monitored validation score.
    """
    # one file each per run folder: a resumed run overwrites them instead of adding *-v1.ckpt
    last = FinalCheckpoint(
        dirpath=folder, filename="last", save_top_k=1, enable_version_counter=False
    )
    if monitor is None:
        return last, None
    best = BestCheckpoint(
        dirpath=folder,
        filename="best",
        monitor=monitor,
        mode="max",
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    return last, best


# the state keys of the checkpoint callbacks (Lightning's state_key starts with the class name)
CHECKPOINT_CALLBACKS = (
    ModelCheckpoint.__qualname__,
    FinalCheckpoint.__qualname__,
    BestCheckpoint.__qualname__,
)
# ModelCheckpoint's state entries that hold paths (best_k_models: a mapping path -> score)
_PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")


def inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """True when ``path``, with ``..`` and links of its folders resolved, lies inside ``folder``.

    The file name itself is not followed: a link named ``last.ckpt`` inside the folder is inside
    (writing replaces the link, removing removes the link).
    """
    path = os.fspath(path)
    if "://" in path:  # another file system (s3://, memory://): never this run's folder
        return False
    if os.path.basename(path) in ("", ".", ".."):
        return False
    real = _resolved(path)
    root = os.path.realpath(os.path.expanduser(os.fspath(folder)))
    return os.path.commonpath([real, root]) == root and real != root


def _resolved(path: str) -> str:
    """``path`` with its folders' links and ``..`` resolved as the OS does, the name kept.

    No lexical normalisation first: ``link/../x`` is the parent of the link's target.
    """
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isabs(path):
        path = os.path.join(os.getcwd(), path)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def _path_like(value: Any) -> bool:
    if isinstance(value, str):
        return "/" in value or os.sep in value or value.startswith(("~", "."))
    if isinstance(value, Mapping):
        return any(_path_like(k) or _path_like(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_path_like(v) for v in value)
    return False


def _score(value: Any) -> bool:
    return value is None or (
        torch.is_tensor(value) and value.numel() == 1 or isinstance(value, (int, float))
    )


def _model_checkpoint_state(state: Any, path: str, checkpoint_dir: str) -> tuple[dict | None, str]:
    """The state with every path rewritten to its resolved form, or None and why it was dropped.

    A relative ``dirpath`` (:func:`portable_state`) is the folder of the file ``path`` itself.
    """
    if not isinstance(state, Mapping):
        return None, "it is not a mapping"
    dirpath = state.get("dirpath")
    if isinstance(dirpath, str) and dirpath and not _absolute(dirpath):
        dirpath = os.path.join(os.path.dirname(os.path.abspath(path)), dirpath)
    real_dir = os.path.realpath(dirpath) if isinstance(dirpath, str) and dirpath else ""
    if not real_dir or not (
        real_dir == os.path.realpath(checkpoint_dir) or inside(real_dir, checkpoint_dir)
    ):
        return None, f"it was written for another folder ({dirpath!r})"
    out = dict(state)
    out["dirpath"] = real_dir

    def rewrite(path: Any) -> str:
        if path in ("", None):
            return ""
        if isinstance(path, str) and not _absolute(path):
            path = os.path.join(real_dir, path)
        if (
            not isinstance(path, str)
            or "://" in path
            or os.path.basename(path) in ("", ".", "..")
            or os.path.dirname(_resolved(path)) != real_dir
        ):
            raise ValueError(path)
        return _resolved(path)

    try:
        for key in _PATH_KEYS:
            if key in out:
                out[key] = rewrite(out[key])
        best = out.get("best_k_models", {})
        if not isinstance(best, Mapping) or not all(_score(v) for v in best.values()):
            return None, "its best_k_models is not a mapping of paths to scores"
        out["best_k_models"] = {rewrite(k): v for k, v in best.items()}
    except ValueError as bad:
        return None, f"it names {bad.args[0]!r}, outside the checkpoint folder {real_dir}"
    for key in ("best_model_score", "current_score", "kth_value"):
        if not _score(out.get(key)):
            return None, f"its {key} is not a score"
    kth = out.get("kth_best_model_path")
    if out["best_k_models"] and kth and kth not in out["best_k_models"]:
        # Lightning would fail on it (KeyError) when the next checkpoint replaces the k-th best
        return None, f"its kth_best_model_path {kth!r} is not one of its best_k_models"
    return out, ""


def _absolute(path: str) -> bool:
    return "://" in path or os.path.isabs(os.path.expanduser(path))


def portable_state(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """``checkpoint`` with its checkpoint callbacks' paths relative to their folder.

    Lightning's ``ModelCheckpoint`` keeps absolute paths (its folder, its best and last files);
    written as they are, a checkpoint's bytes, and its sha256, would depend on where the run
    folder lies. Written relative (``dirpath`` ``.``, the files by name), the same training
    writes the same bytes in any folder, and a moved run folder still resumes (a resumed run
    reads them relative to its own checkpoint folder, :func:`resume_state`). Paths outside the
    callback's folder are kept as they are (and refused at resume).
    """
    states = checkpoint.get("callbacks")
    if not isinstance(states, Mapping):
        return dict(checkpoint)
    out_states = {}
    for key, state in states.items():
        dirpath = state.get("dirpath") if isinstance(state, Mapping) else None
        if not (str(key).startswith(CHECKPOINT_CALLBACKS) and isinstance(dirpath, str) and dirpath):
            out_states[key] = state
            continue
        folder = os.path.abspath(dirpath)

        def relative(path: Any, folder: str = folder) -> Any:
            if isinstance(path, str) and path and os.path.dirname(os.path.abspath(path)) == folder:
                return os.path.basename(path)
            return path

        state = dict(state, dirpath=".")
        for name in _PATH_KEYS:
            if name in state:
                state[name] = relative(state[name])
        if isinstance(state.get("best_k_models"), Mapping):
            state["best_k_models"] = {relative(k): v for k, v in state["best_k_models"].items()}
        out_states[key] = state
    return {**checkpoint, "callbacks": out_states}


def canonical(value: Any) -> Any:
    """``value`` with its containers rebuilt and its strings interned, for repeatable bytes.

    Pickle writes an object seen before as a reference to it, so the bytes of a checkpoint
    depend on which equal strings and tuples happen to be one object: an uninterrupted run's
    optimizer state shares its key strings with Lightning's own, a resumed run's comes from the
    unpickled file and shares none. Rebuilt this way (dicts keep their type, order and
    attributes, e.g. a state dict's ``_metadata``), equal content pickles to equal bytes.
    Tensors and other objects are kept as they are.
    """
    if type(value) is str:
        return sys.intern(value)
    if type(value) in (list, tuple):
        return type(value)(canonical(v) for v in value)
    if isinstance(value, dict):
        try:
            out = type(value)()
        except TypeError:  # a mapping that needs arguments: kept as it is
            return value
        for key, item in value.items():
            out[canonical(key)] = canonical(item)
        for name, attr in getattr(value, "__dict__", {}).items():
            setattr(out, name, canonical(attr))
        return out
    return value


def _callback_states(states: Any, path: str, checkpoint_dir: str) -> dict[str, Any]:
    """The callbacks' state a resumed run may take (see :func:`resume_state`)."""
    if not isinstance(states, Mapping):
        return {}
    kept = {}
    for key, state in states.items():
        if str(key).startswith(CHECKPOINT_CALLBACKS):
            clean, why = _model_checkpoint_state(state, path, checkpoint_dir)
            if clean is None:
                log.warning(
                    "resuming from %s without its checkpoint-callback state (best and last "
                    "checkpoint are tracked afresh): %s",
                    path,
                    why,
                )
                continue
            kept[key] = clean
        elif _path_like(state):
            log.warning(
                "resuming from %s without the state of callback %s: it names paths", path, key
            )
        else:
            kept[key] = state
    return kept


def _check_training_checkpoint(checkpoint: Any, path: str) -> None:
    """Refuse, naming the file, anything but a Lightning training checkpoint."""
    if not isinstance(checkpoint, Mapping):
        raise StbiasError(
            f"train.resume={path!r} is not a Lightning checkpoint (it holds a "
            f"{type(checkpoint).__name__}); give a checkpoints/last.ckpt written by task=train"
        )
    state = checkpoint.get("state_dict")
    if not isinstance(state, Mapping) and any(torch.is_tensor(v) for v in checkpoint.values()):
        missing = ["state_dict"]
    elif not isinstance(state, Mapping):
        raise StbiasError(
            f"train.resume={path!r} is not a Lightning checkpoint (no state_dict); give a "
            "checkpoints/last.ckpt written by task=train"
        )
    else:
        missing = [k for k in ("optimizer_states", "loops", "global_step") if k not in checkpoint]
    if missing:
        raise StbiasError(
            f"train.resume={path!r} holds weights only (no {', '.join(missing)}); to start a "
            "new training from its weights give model.checkpoint=<file> instead"
        )


def resume_state(checkpoint: Any, path: str, checkpoint_dir: str) -> dict[str, Any]:
    """What a run resumed from the checkpoint ``path`` into ``checkpoint_dir`` may take from it.

    Weights, optimizer and scheduler state, loop counters and the mixed-precision scaler (the
    keys of :data:`RESUMED_KEYS`); hyper-parameters and data-module state are left out. Of the
    callbacks' state, a ``ModelCheckpoint``'s is kept only when its folder (written relative:
    the folder ``path`` lies in) is ``checkpoint_dir``
    (or one inside it) and every path it names lies, resolved, directly in that folder (the
    paths are rewritten to their resolved form); otherwise it is dropped with one warning and
    the best and last checkpoints are tracked afresh. Any other callback's state that names
    paths is dropped too.

    Raises:
        StbiasError: naming the file when it is no Lightning training checkpoint.
    """
    _check_training_checkpoint(checkpoint, path)
    out = {k: checkpoint[k] for k in RESUMED_KEYS if k in checkpoint and k != "callbacks"}
    out["callbacks"] = _callback_states(checkpoint.get("callbacks"), path, checkpoint_dir)
    return out


def check_fits(state: Mapping[str, Any], module: torch.nn.Module, path: str) -> None:
    """Refuse a checkpoint whose weights do not fit ``module`` (another class count, model...).

    Raises:
        StbiasError: one line naming the file, what differs, and the class counts when the
            classifier is what differs.
    """
    saved = state["state_dict"]
    target = module.state_dict()
    shapes = {
        k: (tuple(v.shape), tuple(target[k].shape))
        for k, v in saved.items()
        if k in target and torch.is_tensor(v) and tuple(v.shape) != tuple(target[k].shape)
    }
    missing = [k for k in target if k not in saved]
    unexpected = [k for k in saved if k not in target]
    if not (shapes or missing or unexpected):
        return
    classes = getattr(module, "num_classes", None)
    parts = []
    head = [
        s for s in shapes.values() if classes and s[1][:1] == (classes,) and s[0][1:] == s[1][1:]
    ]
    if head:
        parts.append(f"it was trained for {head[0][0][0]} classes, this run has {classes}")
    if shapes:
        shown = [f"{k} {a} in the file, {b} here" for k, (a, b) in list(shapes.items())[:3]]
        parts.append("; ".join(shown) + (f" (+{len(shapes) - 3} more)" if len(shapes) > 3 else ""))
    if missing or unexpected:
        parts.append(
            f"{len(missing)} weights missing, {len(unexpected)} not of this network "
            f"(e.g. {(missing or unexpected)[0]})"
        )
    raise StbiasError(
        f"train.resume={path!r} does not fit this run's network: {'; '.join(parts)}. Resume "
        "with the model, dataset and train.num_classes it was trained with, or start a new "
        "training from its weights with model.checkpoint=<file>"
    )


class RunCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O for one run folder.

    Reads through :func:`stbias.io.load_tensors` (``weights_only=True``) and keeps only
    :func:`resume_state`; writes atomically and only inside ``folder``; removes only files
    inside ``folder`` (a path outside is kept, with one warning).
    """

    def __init__(self, folder: str, checkpoint_dir: str) -> None:
        super().__init__()
        self.folder = folder
        self.checkpoint_dir = checkpoint_dir
        self._read: dict[str, dict[str, Any]] = {}

    def read(self, path: str, module: torch.nn.Module | None = None) -> dict[str, Any]:
        """The resumable state of ``path`` (read once; Lightning's later load reuses it).

        Args:
            path: the checkpoint.
            module: the module the run trains; a checkpoint whose weights do not fit it is
                refused (see :func:`check_fits`).
        """
        key = os.path.abspath(os.path.expanduser(path))
        if key not in self._read:
            checkpoint = load_tensors(path, what="train.resume checkpoint")
            _check_training_checkpoint(checkpoint, path)
            if module is not None:
                check_fits(checkpoint, module, path)
            self._read[key] = resume_state(checkpoint, path, self.checkpoint_dir)
        return self._read[key]

    def load_checkpoint(
        self, path: Any, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Lightning's resume: only what :func:`resume_state` keeps."""
        return self.read(os.fspath(path))

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Write ``checkpoint`` atomically; refuse a path outside the run folder."""
        path = os.fspath(path)
        if not inside(path, self.folder):
            raise StbiasError(
                f"refused to write the checkpoint {path!r}: it lies outside the run folder "
                f"{self.folder}"
            )
        torch_save(canonical(portable_state(checkpoint)), path)

    def remove_checkpoint(self, path: Any) -> None:
        """Remove a checkpoint file of this run; anything else is kept."""
        path = os.fspath(path)
        if not inside(path, self.folder) or os.path.isdir(path):
            log.warning(
                "kept %s: a run removes only its own checkpoint files, in %s", path, self.folder
            )
            return
        if os.path.lexists(path):
            os.remove(path)
