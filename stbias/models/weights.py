"""Weights: local checkpoint files and the libraries' own pretrained downloads, loaded safely.

Every file is read by `stbias.io.load_tensors` (`weights_only=True`): tensors and plain containers
only, so a file whose unpickling would run code is refused instead of executed.
"""

from __future__ import annotations

import logging
import os
import pickle
import urllib.error
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from stbias.errors import StbiasError
from stbias.io import load_tensors, unpickling_detail

log = logging.getLogger(__name__)

# Where a state dict sits inside the containers that training code writes.
_NESTED_KEYS = ("model_state", "state_dict", "model")
_SHOWN = 8


@dataclass
class LoadReport:
    """What `load_checkpoint` did: which keys matched and which did not."""

    path: str
    container: str | None = None
    prefix: str = ""
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    # keys outside the stripped prefix: other parts of a training module (loss buffers, EMA...)
    ignored: list[str] = field(default_factory=list)
    # classifier keys left at their fresh initialisation (new_head: another class count)
    new_head: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every model key was loaded and nothing in the file was left over."""
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        """A readable summary of the problems (empty when `ok`)."""
        parts = []
        if self.missing:
            parts.append(_listing("missing key", self.missing))
        if self.unexpected:
            parts.append(_listing("unexpected key", self.unexpected))
        if self.mismatched:
            shown = [f"{k}: file {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched]
            parts.append(_listing("shape mismatch", shown))
        return "; ".join(parts)


def _listing(what: str, items: list[str]) -> str:
    head = ", ".join(items[:_SHOWN])
    more = f", ... ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
    return f"{len(items)} {what}{'s' if len(items) != 1 else ''} ({head}{more})"


def read_weights_file(path: str) -> Any:
    """Read a local weights file (tensors and plain containers only; see ``io.load_tensors``)."""
    return load_tensors(path, what="checkpoint file")


def extract_state_dict(obj: Any, path: str = "<object>") -> tuple[dict[str, torch.Tensor], str]:
    """Find the state dict in a loaded file: SlowFast-zoo `model_state`, Lightning `state_dict`.

    Returns the state dict and the container key it came from ('' for a plain state dict).
    """
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and _is_state_dict(inner):
                return dict(inner), key
        if _is_state_dict(obj):
            return dict(obj), ""
    kind = type(obj).__name__
    keys = (
        f" with keys {', '.join(map(str, list(obj)[:_SHOWN]))}" if isinstance(obj, Mapping) else ""
    )
    raise StbiasError(
        f"no state dict found in {path!r} (a {kind}{keys}); expected a plain state dict or a "
        f"dict holding one under {', '.join(repr(k) for k in _NESTED_KEYS)}"
    )


def _is_state_dict(obj: Mapping) -> bool:
    return (
        bool(obj)
        and all(isinstance(k, str) for k in obj)
        and any(torch.is_tensor(v) for v in obj.values())
    )


def _best_prefix(file_keys: list[str], model_keys: set[str]) -> str:
    """The key prefix (`model.`, `module.`, `net.backbone.` ...) whose removal matches most keys."""
    candidates = {""}
    for key in file_keys:
        parts = key.split(".")
        for depth in range(1, min(3, len(parts))):
            candidates.add(".".join(parts[:depth]) + ".")

    def score(prefix: str) -> tuple[int, int]:
        hits = sum(1 for k in file_keys if k.startswith(prefix) and k[len(prefix) :] in model_keys)
        return hits, -len(prefix)

    return max(sorted(candidates), key=score)


def _is_new_head(shape_file: tuple[int, ...], shape_model: tuple[int, ...], classes: int) -> bool:
    # a classifier's weight or bias: the class count first, every other dimension equal
    return (
        len(shape_file) == len(shape_model)
        and shape_model[0] == classes != shape_file[0]
        and shape_file[1:] == shape_model[1:]
    )


def load_state_dict_into(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    strict: bool = True,
    path: str = "<dict>",
    new_head: int | None = None,
) -> LoadReport:
    """Load `state` into `model` after stripping the best-matching key prefix.

    Keys outside the stripped prefix (e.g. a Lightning module's loss buffers beside its
    `model.` weights) are listed as `ignored`, not loaded and not an error.
    Keys whose shapes differ are not loaded and are reported. With `strict`, any missing,
    unexpected or mismatched key raises a StbiasError listing them; otherwise the matching
    keys are loaded and the report says what was left out.

    With ``new_head=<classes>`` (fine-tuning Kinetics-400 weights on a dataset of other classes),
    the classifier's keys — those whose first dimension is the model's class count where the
    file has another, all else equal — keep the model's fresh initialisation; they are listed in
    ``report.new_head``, and any other mismatch is still an error.
    """
    target = model.state_dict()
    prefix = _best_prefix(list(state), set(target))
    report = LoadReport(path=path, prefix=prefix)
    renamed = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            report.ignored.append(key)
            continue
        if key[len(prefix) :] not in target:
            report.unexpected.append(key)
            continue
        name = key[len(prefix) :]
        if tuple(value.shape) != tuple(target[name].shape):
            shapes = (tuple(value.shape), tuple(target[name].shape))
            if new_head is not None and _is_new_head(*shapes, int(new_head)):
                report.new_head.append(name)
            else:
                report.mismatched.append((name, *shapes))
            continue
        renamed[name] = value
    skipped = {name for name, _, _ in report.mismatched} | set(report.new_head)
    report.missing = [k for k in target if k not in renamed and k not in skipped]
    if strict and not report.ok:
        raise StbiasError(
            f"weights in {path!r} do not fit the model: {report.describe()}"
            + (f" (key prefix {prefix!r} removed)" if prefix else "")
        )
    model.load_state_dict(renamed, strict=False)
    report.loaded = len(renamed)
    if report.new_head:
        log.info(
            "%s: a new %d-class classifier (%s) on the loaded weights",
            path,
            int(new_head),
            ", ".join(report.new_head),
        )
    if not report.ok:
        log.warning("partial load of %s: %s", path, report.describe())
    return report


def load_checkpoint(
    model: nn.Module, path: str, strict: bool = True, new_head: int | None = None
) -> LoadReport:
    """Load a local weights file into `model` and report what matched.

    Accepts SlowFast / pytorchvideo model-zoo `.pyth` files (a dict with `model_state`),
    Lightning `.ckpt` files (`state_dict`, whose `model.`-style key prefix is removed) and plain
    state dicts. A model with a ``remap_state_dict(state) -> state`` method (VisTR) renames the
    file's keys to its own first. The file is read with `weights_only=True`; one that would run
    code when unpickled is refused.
    """
    obj = read_weights_file(path)
    state, container = extract_state_dict(obj, str(path))
    remap = getattr(model, "remap_state_dict", None)
    if callable(remap):  # a family whose released files name the keys their own way (VisTR)
        state = remap(state)
    report = load_state_dict_into(model, state, strict=strict, path=str(path), new_head=new_head)
    report.container = container or None
    return report


def download_state(url: str, model_name: str, check_hash: bool = False) -> Any:
    """Fetch (or reuse from torch's hub cache) a published weights file, `weights_only=True`.

    Uses `torch.hub.load_state_dict_from_url`, the loader the libraries themselves call, so a
    file already in `<torch hub dir>/checkpoints/` is used without network.
    """
    try:
        return torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=False, check_hash=check_hash, weights_only=True
        )
    except pickle.UnpicklingError as err:
        raise StbiasError(
            f"refused the pretrained weights of {model_name} from {url}: the file would run code "
            f"when unpickled ({unpickling_detail(err)}); stbias never unpickles code"
        ) from None
    except (urllib.error.URLError, OSError, ConnectionError) as err:
        cache = os.path.join(torch.hub.get_dir(), "checkpoints")
        name = os.path.basename(url)
        raise StbiasError(
            f"could not download the pretrained weights of {model_name} from {url} "
            f"({type(err).__name__}: {err}). Without network, fetch {name} on another machine "
            f"and pass it as a local file: model.pretrained=false model.checkpoint=/path/to/{name} "
            f"(or copy it into {cache}/ and keep model.pretrained=true)"
        ) from None
