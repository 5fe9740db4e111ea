"""Writing results: every file lands atomically (a temporary file beside it, then a rename)."""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import platform
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from importlib import metadata
from typing import Any

import numpy as np
import torch

from stbias.errors import StbiasError


def _umask() -> int:
    # the only way to read the umask is to set it; set it straight back
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(path: str | os.PathLike, write, mode: str = "wb") -> None:
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            # mkstemp makes the file 0600; results get the permissions any new file would
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.detach().cpu().numpy())
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` (numpy and torch values allowed) as indented JSON, atomically."""
    text = json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n"
    _atomic_write(path, lambda fh: fh.write(text), mode="w")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (e.g. a Markdown table), atomically."""
    _atomic_write(path, lambda fh: fh.write(text), mode="w")


def write_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write dict rows as CSV (columns in first-seen order), atomically."""
    rows = [dict(r) for r in rows]
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    _atomic_write(path, lambda fh: fh.write(buf.getvalue()), mode="w")


def write_npz(path: str | os.PathLike, arrays: Mapping[str, Any]) -> None:
    """Write named arrays as ``.npz``, atomically."""
    arrays = {
        k: np.asarray(_jsonable(v) if isinstance(v, torch.Tensor) else v) for k, v in arrays.items()
    }
    _atomic_write(path, lambda fh: np.savez(fh, **arrays))


def load_tensors(path: str | os.PathLike, what: str = "file") -> Any:
    """Read a torch file of tensors and plain containers: the one place stbias calls torch.load.

    ``weights_only=True`` is passed explicitly, so neither ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``
    nor anything else makes a file's unpickling run code. Only local files are read: published
    weights come through the model libraries' own download paths (``model.pretrained=true``).

    Args:
        path: a local file.
        what: what the file is, for messages (``checkpoint``, ``cached statistics``, ...).

    Raises:
        StbiasError: naming the file: a URL, a missing or unreadable file, or one whose
            unpickling would run code.
    """
    text = os.fspath(path)
    if "://" in text:
        raise StbiasError(
            f"{what} {text!r} is a URL; stbias reads local files only (download it first; "
            "model.pretrained=true fetches a model's published weights through its library)"
        )
    text = os.path.expanduser(text)
    if not os.path.isfile(text):
        raise StbiasError(f"{what} {text!r} does not exist")
    try:
        return torch.load(text, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = _unpickler_detail(err)
        if "Unsupported global" in detail or "global" in detail.lower():
            raise StbiasError(
                f"refused to load {what} {text!r}: it holds objects that would run code when "
                f"unpickled; stbias reads only tensors and plain containers. Re-save just the "
                f"tensors, e.g. torch.save(model.state_dict(), path) ({detail})"
            ) from None
        raise StbiasError(f"{what} {text!r} is not a readable torch file ({detail})") from None
    except Exception as err:  # noqa: BLE001 - a damaged file fails in many ways (struct.error...)
        first = str(err).splitlines()[0] if str(err) else "empty"
        raise StbiasError(
            f"{what} {text!r} is not a readable torch file ({type(err).__name__}: {first})"
        ) from None


def _unpickler_detail(err: Exception) -> str:
    """The one informative line of torch's weights-only unpickling error."""
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        rest = text.split(marker, 1)[1].strip()
        return rest.split(". Please", 1)[0].splitlines()[0].strip() or text.splitlines()[0]
    return text.splitlines()[0] if text else type(err).__name__


def torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` atomically."""
    _atomic_write(path, lambda fh: torch.save(obj, fh))


def environment() -> dict[str, Any]:
    """Package versions and the git revision of the working tree, for the run's record."""
    packages = {}
    for name in (
        "stbias",
        "torch",
        "torchvision",
        "pytorch-lightning",
        "torchmetrics",
        "hydra-core",
        "numpy",
        "decord",
        "pytorchvideo",
        "timm",
        "wandb",
    ):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        rev = (
            subprocess.run(
                ["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
        dirty = bool(
            subprocess.run(
                ["git", "-C", here, "status", "--porcelain"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        rev, dirty = None, None
    return {
        "python": platform.python_version(),
        "packages": packages,
        "git": {"revision": rev, "dirty": dirty},
    }
