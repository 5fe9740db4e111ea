"""Checks on the composed config, run before any model is built or clip decoded.

Each check names a key, what values are valid and how to say it on the command line, so a typo
(`metric.lam=abc`, `probe.num_clips=0`, `metric.lr=nan`) stops the run at once with one line
instead of a traceback after minutes of work. Keys absent from the composed config are not
checked. Beyond the ranges of :data:`CHECKS`: every key of every node is a setting of the right
type (:mod:`stbias.settings`; ``+train.static_dropout.foo=1`` is refused), and no number
anywhere in the config may be NaN or infinite.

:func:`check_arguments` is the command line's check: it composes ``python run.py <args>``
before Hydra runs anything, so a key that is not a setting, a wrong type, an unknown option or
a key the chosen task does not read stops with one line and exit code 2.

:func:`require_finite` is the same rule for what a task computes: every task checks its outputs
before writing them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

from stbias import settings
from stbias.config import compose, home_task, names_task
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


def drop_probability(value: Any) -> str | None:
    """A drop probability: a number in [0, 1), 0 turning StaticDropout off."""
    ok = number(0.0, 1.0, closed=True)(value) is None and value < 1
    return None if ok else "a number in [0, 1) (0 turns StaticDropout off)"


def positive(value: Any) -> str | None:
    """A finite number > 0."""
    return number(0.0, math.inf)(value) and "a finite number > 0"


def non_negative(value: Any) -> str | None:
    """A finite number >= 0."""
    ok = number(0.0, math.inf, closed=True)(value) is None and math.isfinite(value)
    return None if ok else "a finite number >= 0"


def numbers(low: float = -math.inf, strictly_above: bool = False) -> Check:
    """A non-empty list of finite numbers, each > low (``strictly_above``) or any finite."""

    def check(value: Any) -> str | None:
        valid = "a list of finite numbers" + (f" > {low:g}" if strictly_above else "")
        if not isinstance(value, list) or not value:
            return valid
        for v in value:
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                return valid
            if strictly_above and not v > low:
                return valid
        return None

    return check


def one_of(*choices: str) -> Check:
    """One of the given strings."""

    def check(value: Any) -> str | None:
        return None if value in choices else f"one of {', '.join(map(str, choices))}"

    return check


def boolean(value: Any) -> str | None:
    """true or false."""
    return None if isinstance(value, bool) else "true or false"


def maybe(check: Check) -> Check:
    """``check``, or null."""

    def allow_null(value: Any) -> str | None:
        if value is None:
            return None
        valid = check(value)
        return None if valid is None else f"{valid} or null"

    return allow_null


def grid(value: Any) -> str | None:
    """Null, or ``[T', H', W']``: three integers >= 1."""
    if value is None:
        return None
    if isinstance(value, list) and len(value) == 3 and all(_is_int(v) and v >= 1 for v in value):
        return None
    return "[T', H', W'] (three integers >= 1, the token grid of a layer) or null"


def text(value: Any) -> str | None:
    """A non-empty string."""
    return None if isinstance(value, str) and value else "a non-empty name"


def mapping(value: Any) -> str | None:
    """A mapping (key: value), or null."""
    return None if value is None or isinstance(value, dict) else "a mapping {key: value} or null"


def roots(value: Any) -> str | None:
    """A mapping of dataset option -> root folder, or null."""
    if value is None:
        return None
    if isinstance(value, dict) and all(isinstance(v, str) and v for v in value.values()):
        return None
    return "a mapping of dataset option -> root folder, e.g. {davis: /data/DAVIS}, or null"


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
    "metric.figures": integer(0),
    "metric.target_class": one_of("predicted", "label"),
    "metric.perturbation": one_of("freeze", "reverse"),
    "metric.iterations": integer(0),
    "metric.lr": positive,
    "metric.l1": non_negative,
    "metric.tv": non_negative,
    "metric.beta": positive,
    "metric.init": one_of("spec", "reference"),
    "metric.init_fraction": number(0.0, 1.0, closed=True),
    "metric.init_logit": positive,
    "metric.tv_weights": one_of("spec", "reference"),
    "metric.reverse_blend": one_of("spec", "reference"),
    "metric.reverse_threshold": number(0.0, 1.0, closed=True),
    "metric.length_threshold": number(0.0, 1.0, closed=True),
    "metric.min_drop": non_negative,
    "metric.weights": one_of("time", "time_mean"),
    "metric.target": one_of("logit", "softmax"),
    "metric.time": one_of("interpolate", "repeat"),
    "metric.normalize": one_of("frame", "clip", "none"),
    "metric.eps": non_negative,
    "metric.token_order": maybe(one_of("thw", "hwt")),
    "metric.save_maps": boolean,
    "metric.grid": grid,
    "metric.blobs": mapping,
    "metric.label_key": text,
    "metric.fps": positive,
    "model.pretrained": boolean,
    "model.input.frames": integer(1),
    "model.input.sampling_rate": integer(1),
    "model.input.size": integer(1),
    "model.input.short_side": integer(1, allow_null=True),
    "model.input.channels": one_of(1, 3),
    "model.input.pathways": one_of(1, 2),
    "model.input.mean": numbers(),
    "model.input.std": numbers(0.0, strictly_above=True),
    "model.input.flow_mean": numbers(),
    "model.input.flow_std": numbers(0.0, strictly_above=True),
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
    "train.optimizer.lr": positive,
    "train.optimizer.weight_decay": non_negative,
    "train.instance_segmentation.class_weight": non_negative,
    "train.instance_segmentation.bce_weight": non_negative,
    "train.instance_segmentation.dice_weight": non_negative,
    "train.instance_segmentation.box_weight": non_negative,
    "train.instance_segmentation.no_object_weight": non_negative,
    "train.instance_segmentation.threshold": number(0.0, 1.0),
    "train.static_dropout.p": drop_probability,
    "train.static_dropout.units": one_of("static", "static_joint"),
    "train.static_dropout.refresh_every": integer(1),
    "train.static_dropout.lam": number(-1.0, 1.0),
    "train.static_dropout.mode": one_of("static", "all", "random"),
    "train.static_dropout.init": one_of("trained", "start"),
    "trainer.max_epochs": integer(-1),
    "task.roots": roots,
    "task.size": integer(1, allow_null=True),
    "task.train.clips": integer(1),
    "task.train.val_clips": integer(1),
    "task.train.max_epochs": integer(1),
    "task.train.batch_size": integer(1),
    "task.linear_probe.c": positive,
    "task.linear_probe.tol": positive,
    "task.linear_probe.max_iter": integer(1),
    "task.linear_probe.fine_tune.epochs": integer(1),
    "task.linear_probe.fine_tune.lr": positive,
    "task.linear_probe.fine_tune.batch_size": integer(1),
}


def _lookup(cfg: Any, key: str) -> tuple[bool, Any]:
    """``(present, value)`` of a dotted key; a value that does not resolve (a ``???`` path, which
    the task reports itself in its own words) counts as absent."""
    try:
        node = cfg
        for part in key.split("."):
            if node is None or not OmegaConf.is_dict(node) or part not in node:
                return False, None
            node = node[part]
        return True, OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(
            node
        ) else node
    except Exception:  # noqa: BLE001 - omegaconf raises several interpolation errors
        return False, None


def _plain(cfg: Any) -> Any:
    """The config as plain containers, interpolations resolved where they resolve."""
    if not OmegaConf.is_config(cfg):
        return cfg
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001 - a node the task does not use may not resolve
        return OmegaConf.to_container(cfg, resolve=False)


def validate(cfg: Any) -> None:
    """Raise a StbiasError for the first value of ``cfg`` that is not valid.

    In order: the keys of :data:`CHECKS` (their ranges), every key and type
    (:func:`stbias.settings.check`: a key that is not a setting, a value of the wrong type), and
    any NaN or infinite number anywhere in the config.
    """
    for key, check in CHECKS.items():
        present, value = _lookup(cfg, key)
        if not present:
            continue
        valid = check(value)
        if valid is not None:
            raise StbiasError(f"{key}={value!r} is not valid; {key} takes {valid}")
    _, dropout = _lookup(cfg, "train.static_dropout.p")
    _, clips = _lookup(cfg, "probe.num_clips")
    if isinstance(dropout, (int, float)) and dropout > 0 and not (_is_int(clips) and clips >= 2):
        raise StbiasError(
            f"probe.num_clips={clips!r} is not valid; StaticDropout (train.static_dropout.p > 0) "
            "scores units on probe.num_clips training clips: an integer >= 2"
        )
    settings.check(cfg)
    found = first_non_finite(_plain(cfg))
    if found is not None:
        key = found[0]
        present, value = _lookup(cfg, key.split("[")[0])
        shown = f"={value!r}" if present else ""
        raise StbiasError(
            f"{key}{shown} is not valid: settings must be finite numbers (not NaN or inf)"
        )


def _non_finite(value: Any) -> tuple[int, int] | None:
    """``(bad, total)`` counts of NaN/inf entries of a number, array or tensor; None otherwise."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return None
    if isinstance(value, (int, float)):
        return (0 if math.isfinite(value) else 1), 1
    if hasattr(value, "detach") and hasattr(value, "is_floating_point"):  # a torch tensor
        if not (value.is_floating_point() or value.is_complex()):
            return None
        import torch

        bad = int((~torch.isfinite(value.detach())).sum())
        return bad, int(value.numel())
    if hasattr(value, "dtype") and hasattr(value, "size"):  # a numpy array or scalar
        import numpy as np

        array = np.asarray(value)
        if not np.issubdtype(array.dtype, np.inexact):
            return None
        return int((~np.isfinite(array)).sum()), int(array.size)
    return None


def first_non_finite(values: Any, prefix: str = "") -> tuple[str, int, int] | None:
    """Where ``values`` (a number, array, tensor, or mappings and lists of them) is not finite.

    Returns:
        ``(key path, bad entries, entries)`` of the first such value, or None when all are finite.
    """
    counts = _non_finite(values)
    if counts is not None:
        return (prefix, *counts) if counts[0] else None
    if isinstance(values, Mapping):
        items = ((f"{prefix}.{k}" if prefix else str(k), v) for k, v in values.items())
    elif isinstance(values, (list, tuple)):
        items = ((f"{prefix}[{i}]", v) for i, v in enumerate(values))
    else:
        return None
    for key, value in items:
        found = first_non_finite(value, key)
        if found is not None:
            return found
    return None


def require_finite(values: Any, what: str, advice: str = "nothing was written") -> None:
    """Raise a StbiasError naming ``what`` (and the key) when ``values`` hold NaN or inf.

    Every task calls it on its outputs before writing them, so a NaN-producing model or setting
    stops with one line instead of files of NaN or a traceback while results are written.
    """
    found = first_non_finite(values)
    if found is None:
        return
    key, bad, total = found
    where = f" ({key})" if key else ""
    raise StbiasError(f"{what}{where}: {bad} of {total} values are NaN or infinite; {advice}")


# Hydra flags: the config folder (its value joins the search path); flags after which Hydra
# runs nothing or composes another primary config (left to Hydra); flags that print the config
# (checked, but a mistake does not stop the printing), with the words they take
_FLAGS_WITH_VALUE = ("--config-dir", "-cd")
_FLAGS_LEFT_TO_HYDRA = (
    "--help",
    "-h",
    "--hydra-help",
    "--shell-completion",
    "-sc",
    "--experimental-rerun",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
)
_FLAGS_PRINTING = {
    "--cfg": ("job", "hydra", "all"),
    "-c": ("job", "hydra", "all"),
    "--package": None,
    "-p": None,
    "--info": ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath"),
    "-i": ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath"),
    "--resolve": (),
}


def _one_line(err: BaseException) -> str:
    """Hydra's message of a failed composition on one line."""
    text = str(err).split("Config search path")[0].removeprefix("In 'config': ")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines).replace(" Available options in", "; available options in")


def _compose_checked(overrides: list[str]) -> Any:
    """The config of ``overrides``; a key that cannot be set (not in its node) is named with
    what its node takes, any other failure to compose is Hydra's message on one line."""
    try:
        return compose(overrides)
    except StbiasError:
        raise
    except Exception as err:  # noqa: BLE001 - Hydra raises several composition errors
        text = str(err)
        for i, override in enumerate(overrides):
            key = settings.override_key(override)
            if f"Could not override '{key}'" in text and not override.startswith("~"):
                rest = overrides[:i] + overrides[i + 1 :]
                try:
                    cfg = compose(rest)
                except Exception:  # noqa: BLE001 - report Hydra's own message below
                    break
                parsed = OverridesParser.create().parse_override(override)
                if parsed.is_sweep_override():
                    break
                with open_dict(cfg):  # the value as Hydra reads it (3 a number, not "3")
                    OmegaConf.update(cfg, key, parsed.value(), force_add=True)
                settings.check(cfg)  # raises the line naming the key and what its node takes
                settings.check_command_line(cfg, [override])  # or the task that does not read it
                node = key.rsplit(".", 1)[0]
                if "." in key and OmegaConf.select(compose(rest), node) is None:
                    raise StbiasError(
                        f"{key} is not read by task={cfg.task.get('name')}: its config has no "
                        f"{node} node (the node of another task)"
                    ) from None
                break  # a key a free-form node may take: Hydra's own advice (+key=value)
        raise StbiasError(_one_line(err)) from None


def check_arguments(args: Sequence[str]) -> list[str]:
    """Check the command line ``python run.py <args>`` before Hydra runs it; the arguments to
    run (with ``task=<home>`` added where the chosen metric or model names the task it runs in).

    Composes the config as Hydra will (each sweep at its first value) and raises one
    StbiasError line for an unknown option or key, a value of the wrong type or outside its
    range (:func:`validate`), a key the chosen task does not read and a contradictory task
    (:func:`stbias.settings.check_command_line`).
    """
    args = list(args)
    overrides: list[str] = []
    search = []
    printing = False
    i = 0
    while i < len(args):
        arg, flag = args[i], args[i].split("=")[0]
        i += 1
        if flag in _FLAGS_LEFT_TO_HYDRA:
            return args
        if flag in _FLAGS_WITH_VALUE:
            value = arg.split("=", 1)[1] if "=" in arg else (args[i] if i < len(args) else "")
            search.append(f"file://{os.path.abspath(value)}")
            i += 0 if "=" in arg else 1
        elif flag in _FLAGS_PRINTING:
            printing = True
            words = _FLAGS_PRINTING[flag]
            if "=" not in arg and i < len(args) and (words is None or args[i] in words):
                i += 1  # the flag's value
        elif not arg.startswith("-"):
            overrides.append(arg)
    if printing:  # --cfg job metric=asdt prints the task the metric runs in; nothing runs
        try:
            return _checked(args, overrides, search)
        except StbiasError:
            return args
    return _checked(args, overrides, search)


def _checked(args: list[str], overrides: list[str], search: list[str]) -> list[str]:
    """:func:`check_arguments` on the overrides and search path it found in ``args``."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as err:  # noqa: BLE001 - Hydra's override grammar errors
        raise StbiasError(_one_line(err)) from None
    chosen = []
    for override in parsed:
        key = override.key_or_group
        if key.startswith("hydra") and key != "hydra.searchpath":
            continue  # the run folder, the launcher: Hydra's own
        if key == "hydra.searchpath":
            value = override.get_value_element_as_str().strip("[]")
            search += [v.strip() for v in value.split(",") if v.strip()]
            continue
        if override.is_sweep_override():
            first = next(iter(override.sweep_string_iterator()))
            chosen.append(f"{override.get_key_element()}={first}")
        else:
            chosen.append(override.input_line)
    extra = [f"hydra.searchpath=[{','.join(search)}]"] if search else []
    cfg = _compose_checked([*chosen, *extra])
    validate(cfg)
    settings.check_command_line(cfg, chosen)
    home = None if names_task(chosen) else home_task(cfg)
    # Hydra composes without the home-task rule of stbias.config.compose: name the task for it
    added = [f"task={home[1]}"] if home and str(cfg.task.name) == home[1] else []
    return [*args, *added]
