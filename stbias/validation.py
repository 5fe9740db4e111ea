"""Checks on the composed config, run before any model is built or clip decoded.

Each check names a key, what values are valid and how to say it on the command line, so a typo
(`metric.lam=abc`, `probe.num_clips=0`) stops the run at once with one line instead of a
traceback after minutes of work. Keys absent from the composed config are not checked.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from omegaconf import OmegaConf

from stbias.errors import StbiasError

Check = Callable[[Any], str | None]  # returns what would be valid, or None when the value is fine


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def integer(low: int, allow_null: bool = False) -> Check:
    """An integer >= low (or null)."""

    def check(value: Any) -> str | None:
        if value is None and allow_null:
            return None
        if _is_int(value) and value >= low:
            return None
        return f"an integer >= {low}" + (" or null" if allow_null else "")

    return check


def number(low: float, high: float, closed: bool = False, allow_null: bool = False) -> Check:
    """A finite number in (low, high), or [low, high] when ``closed``."""

    def check(value: Any) -> str | None:
        if value is None and allow_null:
            return None
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and math.isfinite(value)
        if ok and (low <= value <= high if closed else low < value < high):
            return None
        brackets = "[]" if closed else "()"
        return f"a number in {brackets[0]}{low:g}, {high:g}{brackets[1]}"

    return check


def one_of(*choices: str) -> Check:
    """One of the given strings."""

    def check(value: Any) -> str | None:
        return None if value in choices else f"one of {', '.join(map(str, choices))}"

    return check


def boolean(value: Any) -> str | None:
    """true or false."""
    return None if isinstance(value, bool) else "true or false"


def workers(value: Any) -> str | None:
    """DataLoader worker processes: an integer >= 0 or auto."""
    return None if value == "auto" or (_is_int(value) and value >= 0) else "an integer >= 0 or auto"


def auto_or_boolean(value: Any) -> str | None:
    """auto, true or false."""
    return None if value == "auto" or isinstance(value, bool) else "auto, true or false"


def names(value: Any) -> str | None:
    """A list of names, one name, or null."""
    if value is None or isinstance(value, str):
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return None
    return "a list of names such as [res2,res4], or null"


CHECKS: dict[str, Check] = {
    "seed": integer(0),
    "verbose": boolean,
    "metric.lam": number(-1.0, 1.0),
    "metric.estimator": one_of("pooled", "mean_corr"),
    "metric.delta": number(-math.inf, math.inf),
    "metric.rule": one_of("spec", "literal"),
    "probe.layers": names,
    "probe.num_clips": integer(1, allow_null=True),
    "probe.sampling": one_of("stratified", "random", "first"),
    "probe.batch_size": integer(1),
    # before probe.num_workers, which follows dataset.num_workers: the key the user set is named
    "dataset.backend": one_of("auto", "decord", "pyav"),
    "dataset.decode_threads": integer(0),
    "dataset.num_workers": workers,
    "dataset.prefetch_factor": integer(1, allow_null=True),
    "dataset.pin_memory": auto_or_boolean,
    "probe.num_workers": workers,
    "probe.stylize_on": one_of("auto", "device", "loader"),
    "probe.bootstrap": integer(0),
    "probe.include_cls": boolean,
    "probe.save_every": integer(1),
    "model.pretrained": boolean,
    "model.input.frames": integer(1),
    "model.input.sampling_rate": integer(1),
    "model.input.size": integer(1),
    "model.input.short_side": integer(1, allow_null=True),
    "model.input.channels": one_of(1, 3),
    "model.input.pathways": one_of(1, 2),
    "dataset.num_views": integer(1),
    "dataset.num_samples": integer(1),
    "dataset.temporal": one_of("uniform", "random", "centre", "center"),
    "dataset.crop": one_of("centre", "center", "random"),
    "train.batch_size": integer(1),
    "train.num_workers": integer(0),
    "train.num_classes": integer(2, allow_null=True),
    "train.train_clips": integer(1, allow_null=True),
    "train.val_clips": integer(1, allow_null=True),
    "train.shuffle_frames": boolean,
    "trainer.max_epochs": integer(-1),
    "task.train.clips": integer(1),
    "task.train.val_clips": integer(1),
    "task.train.max_epochs": integer(1),
    "task.train.batch_size": integer(1),
}


def _lookup(cfg: Any, key: str) -> tuple[bool, Any]:
    node = cfg
    for part in key.split("."):
        if node is None or not OmegaConf.is_dict(node) or part not in node:
            return False, None
        node = node[part]
    return True, OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def validate(cfg: Any) -> None:
    """Raise a StbiasError for the first key of :data:`CHECKS` whose value is not valid."""
    for key, check in CHECKS.items():
        present, value = _lookup(cfg, key)
        if not present:
            continue
        valid = check(value)
        if valid is not None:
            raise StbiasError(f"{key}={value!r} is not valid; {key} takes {valid}")
