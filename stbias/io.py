"""Writing results: every file lands atomically (a temporary file beside it, then a rename)."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import pickle
import pickletools
import platform
import subprocess
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from importlib import metadata
from typing import Any

import numpy as np
import torch

from stbias.errors import StbiasError


class WriteError(StbiasError):
    """A result or cache file could not be written (disk full, no permission, ...).

    ``path`` is the file; callers that write a cache catch it and go on without the cache.
    """

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


_FULL = (errno.ENOSPC, errno.EDQUOT)


def _write_error(path: str, err: OSError) -> WriteError:
    if err.errno in _FULL:
        return WriteError(
            f"cannot write {path!r}: no space left on the device; free space there or "
            "give another folder",
            path,
        )
    reason = err.strerror or type(err).__name__
    return WriteError(f"cannot write {path!r}: {reason}", path)


def _umask() -> int:
    # the only way to read the umask is to set it; set it straight back
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(path: str | os.PathLike, write, mode: str = "wb") -> None:
    """Write through ``write(fh)`` into a temporary file beside ``path``, then rename it.

    Raises:
        WriteError: naming ``path`` when the file system refuses (disk full, permissions); the
            old file, if any, is left as it was and no temporary file remains.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    except OSError as err:
        raise _write_error(path, err) from None
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            # mkstemp makes the file 0600; results get the permissions any new file would
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(err, OSError):
            raise _write_error(path, err) from None
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
        detail = unpickling_detail(err)
        calls = _code_globals(text)
        if calls or "global" in detail.lower():
            named = f"it names {', '.join(calls[:3])}" if calls else detail
            raise StbiasError(
                f"refused to load {what} {text!r}: it holds objects that would run code when "
                f"unpickled ({named}); stbias reads only tensors and plain containers and never "
                "unpickles code. Re-save just the tensors where the file came from, e.g. "
                "torch.save(model.state_dict(), path)"
            ) from None
        raise StbiasError(
            f"{what} {text!r} is not a readable torch file ({detail}); stbias reads files "
            "of tensors and plain containers written by torch.save"
        ) from None
    except Exception as err:  # noqa: BLE001 - a damaged file fails in many ways (struct.error...)
        first = _clean(str(err)) or "empty"
        raise StbiasError(
            f"{what} {text!r} is not a readable torch file ({type(err).__name__}: {first})"
        ) from None


# torch's advice on a refused file: the one thing a user must not do with an untrusted file
_ADVICE = ("weights_only", "please file an issue", "check the documentation", "in pytorch 2.6")


def _clean(text: str) -> str:
    """The first line of an error message that is not torch's advice about ``weights_only``."""
    for line in text.splitlines():
        line = line.strip()
        if line and not any(a in line.lower() for a in _ADVICE):
            return line.split(". Please", 1)[0]
    return ""


def unpickling_detail(err: Exception) -> str:
    """The one informative line of torch's weights-only unpickling error."""
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    return _clean(text) or type(err).__name__


# modules whose names a torch file of tensors refers to (storages, rebuild helpers, containers)
_DATA_MODULES = ("torch", "collections", "numpy", "_codecs")


def _code_globals(path: str) -> list[str]:
    """The callables other than torch's own that a pickle names (``posix.system``, ...).

    Read with ``pickletools`` (which lists opcodes and never imports or calls anything), from a
    plain pickle or the ``data.pkl`` of a torch zip file; an unreadable stream gives what was
    read before the damage.
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith("data.pkl")]
                data = archive.read(names[0]) if names else b""
        else:
            with open(path, "rb") as fh:
                data = fh.read(64 << 20)
    except (OSError, zipfile.BadZipFile, KeyError):
        return []
    found: list[str] = []
    strings: list[str | None] = []  # what each opcode pushed, when it was a string
    memo: dict[int, str | None] = {}
    try:
        for opcode, arg, _ in pickletools.genops(data):
            op = opcode.name
            if op in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                memo[len(memo) if op == "MEMOIZE" else int(arg)] = strings[-1] if strings else None
                continue
            if op in ("GET", "BINGET", "LONG_BINGET"):
                strings.append(memo.get(int(arg)))
                continue
            if isinstance(arg, str) and ("UNICODE" in op or op.endswith("STRING")):
                strings.append(arg)
                continue
            strings.append(None)
            if op in ("GLOBAL", "INST"):
                name = str(arg).replace(" ", ".", 1)
            elif op == "STACK_GLOBAL" and len(strings) >= 3 and None not in strings[-3:-1]:
                name = f"{strings[-3]}.{strings[-2]}"
            else:
                continue
            if name.split(".", 1)[0] not in _DATA_MODULES and name not in found:
                found.append(name)
    except Exception:  # noqa: BLE001 - pickletools raises ValueError and others on damage
        pass
    return found


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
