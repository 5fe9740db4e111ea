"""The model a task runs: its weights (checkpoint, published, random), the settings a
``task=train`` checkpoint records (read as plain numbers only), and building it."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf, open_dict

from stbias.config import CONF_DIR
from stbias.errors import StbiasError
from stbias.io import load_tensors
from stbias.models.inputs import InputSpec
from stbias.models.registry import attach, build
from stbias.tasks.run_config import choice, plain

log = logging.getLogger(__name__)


# hyper_parameters key under which task=train stores the model config changes it made
# (num_classes, in_channels, input channels) so that the checkpoint rebuilds its network
MODEL_OVERRIDES = "model_overrides"


# What a checkpoint may set in the model config it is loaded into, and of what type: plain numbers
# only. Nothing else read from a file reaches the config, and so hydra's instantiate.
CHECKPOINT_SETTINGS: dict[str, dict[str, str]] = {
    "builder": {"num_classes": "int", "in_channels": "int"},
    "input": {
        "frames": "int",
        "sampling_rate": "int",
        "size": "int",
        "short_side": "int or null",
        "mean": "list of numbers",
        "std": "list of numbers",
        "channels": "int",
        "pathways": "int",
        "alpha": "int or null",
        "flow": "bool",
        "flow_mean": "list of numbers",
        "flow_std": "list of numbers",
    },
}


# The range each of those settings may take: what the model families stbias builds accept (clips
# of up to 256 frames of up to 512 pixels a side, grey or RGB, one or two pathways). A file asking
# for more (frames=10**9) is refused before anything is allocated.
CHECKPOINT_LIMITS: dict[str, tuple[float, float]] = {
    "num_classes": (1, 100_000),
    "in_channels": (1, 3),
    "frames": (1, 256),
    "sampling_rate": (1, 64),
    "size": (1, 512),
    "short_side": (1, 1024),
    "channels": (1, 3),
    "pathways": (1, 2),
    "alpha": (1, 32),
    "mean": (-10.0, 10.0),
    "std": (1e-6, 10.0),
    "flow_mean": (-10.0, 10.0),
    "flow_std": (1e-6, 10.0),
}


# list settings hold one value per input channel
_MAX_VALUES = 3


def _within(key: str, value: Any) -> str | None:
    """None when ``value`` lies within :data:`CHECKPOINT_LIMITS`, else what would be valid."""
    if key not in CHECKPOINT_LIMITS or value is None or isinstance(value, bool):
        return None
    low, high = CHECKPOINT_LIMITS[key]
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if isinstance(value, (list, tuple)) and not 1 <= len(values) <= _MAX_VALUES:
        return f"1 to {_MAX_VALUES} values (one per channel)"
    if key in ("channels", "in_channels") and values[0] not in (1, 3):
        return "1 or 3"
    if all(low <= v <= high for v in values):
        return None
    bounds = f"{low:g}..{high:g}"
    return f"values in {bounds}" if isinstance(value, (list, tuple)) else bounds


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def _fits(kind: str, value: Any) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "int or null":
        return value is None or _fits("int", value)
    return isinstance(value, (list, tuple)) and all(_number(v) for v in value)


def _refuse(path: str, where: str, what: str) -> StbiasError:
    allowed = "; ".join(f"{node}: {', '.join(keys)}" for node, keys in CHECKPOINT_SETTINGS.items())
    return StbiasError(
        f"refused checkpoint {path!r}: hyper_parameters.{where} {what}; a checkpoint may set "
        f"only these model settings, as plain numbers ({allowed})"
    )


def _checked(path: str, node: str, values: Any, where: str) -> dict[str, Any]:
    if not isinstance(values, Mapping):
        raise _refuse(path, where, f"is a {type(values).__name__}, not a mapping")
    allowed = CHECKPOINT_SETTINGS[node]
    out = {}
    for key, value in values.items():
        if key not in allowed:
            raise _refuse(path, f"{where}.{key}", "is not a setting a checkpoint may change")
        if not _fits(allowed[key], value):
            article = "a" if allowed[key] in ("bool", "list of numbers") else "an"
            raise _refuse(path, f"{where}.{key}", f"is not {article} {allowed[key]} ({value!r})")
        valid = _within(key, value)
        if valid is not None:
            raise StbiasError(
                f"refused checkpoint {path!r}: hyper_parameters.{where}.{key}={value!r} is out "
                f"of range; {key} takes {valid} for the models stbias builds"
            )
        out[str(key)] = list(value) if isinstance(value, (list, tuple)) else value
    return out


def checkpoint_settings(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The model settings a ``task=train`` checkpoint was trained with (``{}`` for other files).

    Returns ``{"builder": {...}, "input": {...}}``: the class count and input channels of the
    trained network, and the input spec it was trained at. Only the keys of
    :data:`CHECKPOINT_SETTINGS`, as plain numbers, are accepted; anything else in those entries
    (a ``_target_`` at any depth, a nested mapping, a string) refuses the file with an error
    naming the key. Only Lightning ``.ckpt`` files carry settings.
    """
    path = os.path.expanduser(str(path))
    if not path.endswith(".ckpt"):
        return {}
    obj = load_tensors(path, what="checkpoint")
    hparams = obj.get("hyper_parameters") if isinstance(obj, Mapping) else None
    if not isinstance(hparams, Mapping):
        return {}
    settings: dict[str, dict[str, Any]] = {"builder": {}, "input": {}}
    if hparams.get("input") is not None:
        settings["input"].update(_checked(path, "input", hparams["input"], "input"))
    overrides = hparams.get(MODEL_OVERRIDES)
    if overrides is not None:
        if not isinstance(overrides, Mapping):
            raise _refuse(path, MODEL_OVERRIDES, "is not a mapping")
        for node, values in overrides.items():
            if node not in CHECKPOINT_SETTINGS:
                raise _refuse(path, f"{MODEL_OVERRIDES}.{node}", "is not builder or input")
            settings[node].update(_checked(path, node, values, f"{MODEL_OVERRIDES}.{node}"))
    spec = settings["input"]
    channels = spec.get("channels")
    for key in ("mean", "std"):
        if channels is not None and key in spec and len(spec[key]) != channels:
            raise StbiasError(
                f"refused checkpoint {path!r}: hyper_parameters input.{key} has "
                f"{len(spec[key])} values for {channels} channels"
            )
    return {node: values for node, values in settings.items() if values}


def _checkpoint_changes(model_cfg: Any) -> dict[str, dict[str, Any]]:
    checkpoint = model_cfg.get("checkpoint") if model_cfg is not None else None
    settings = checkpoint_settings(checkpoint) if checkpoint else {}
    changes: dict[str, dict[str, Any]] = {}
    for node, values in settings.items():
        current = plain(model_cfg.get(node)) or {}
        if node == "input":  # keys left out of a model's input are InputSpec's defaults
            defaults = InputSpec.__dataclass_fields__
            for key, spec_field in defaults.items():
                if key not in current and spec_field.default is not dataclasses.MISSING:
                    current[key] = spec_field.default
        diff = {k: v for k, v in values.items() if _plain_value(current.get(k)) != v}
        if diff:
            changes[node] = diff
    return changes


def _plain_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _set_checkpoint_changes(model_cfg: Any, changes: dict[str, dict[str, Any]]) -> None:
    with open_dict(model_cfg):
        for node, values in changes.items():
            if model_cfg.get(node) is None:
                model_cfg[node] = {}
            for key, value in values.items():
                model_cfg[node][key] = value
        if "num_classes" in model_cfg and "num_classes" in changes.get("builder", {}):
            model_cfg.num_classes = changes["builder"]["num_classes"]


def model_config_for_checkpoint(model_cfg: Any) -> Any:
    """A copy of ``model_cfg`` set to the network and input its ``checkpoint`` was trained with.

    A classifier trained by ``task=train`` on BrushMNIST has, say, a 100-way head, one input
    channel and 8 frames of 32 pixels; this makes ``model=<name> model.checkpoint=<ckpt>``
    rebuild exactly that network and feed it clips as it was trained. Configs without such a
    checkpoint come back unchanged.
    """
    changes = _checkpoint_changes(model_cfg)
    if not changes:
        return model_cfg
    model_cfg = copy.deepcopy(model_cfg)
    _set_checkpoint_changes(model_cfg, changes)
    return model_cfg


def apply_checkpoint_settings(cfg: Any) -> dict[str, dict[str, Any]]:
    """Set ``cfg.model`` in place to what ``model.checkpoint`` was trained with; returns changes.

    In place, so that everything interpolated from ``model.input`` (the dataset's clip geometry)
    follows, and the run's saved config is what ran.
    """
    changes = _checkpoint_changes(cfg.model)
    if changes:
        _set_checkpoint_changes(cfg.model, changes)
        described = ", ".join(
            f"model.{node}.{k}={v}" for node, values in changes.items() for k, v in values.items()
        )
        log.info("settings from the checkpoint %s: %s", cfg.model.checkpoint, described)
    return changes


def require_one_model(cfg: Any, task: str) -> None:
    """Refuse a model option that names several models (``model=quickstart``) for ``task``."""
    models = cfg.model.get("models") if cfg.get("model") is not None else None
    if models:
        raise StbiasError(
            f"model={cfg.model.get('name')} names several models ({', '.join(map(str, models))}) "
            f"for task=quickstart; {task} takes one: model=<name>, e.g. model={models[-1]}"
        )


def prepare_model(cfg: Any, task: str, warn_random: bool = False) -> str:
    """What every task does to ``cfg.model`` before building it; returns the model's name.

    One model (not a set), a checkpoint that is a local file, published weights where
    ``model.pretrained=true``, the checkpoint's own settings (see
    :func:`apply_checkpoint_settings`) and, with ``warn_random``, a warning for random weights.
    """
    require_one_model(cfg, task)
    name = choice(cfg, "model")
    check_weights(cfg.model, name)
    apply_checkpoint_settings(cfg)
    if warn_random:
        warn_if_random(cfg.model, name)
    return name


def models_with_published_weights() -> list[str]:
    """The model options whose config names published weights (``published_weights``)."""
    names = []
    for path in sorted((CONF_DIR / "model").glob("*.yaml")):
        if OmegaConf.load(path).get("published_weights"):
            names.append(path.stem)
    return names


def check_weights(model_cfg: Any, name: str) -> None:
    """Refuse a ``model.checkpoint`` that is no local file, and ``model.pretrained=true`` on a
    model with no published weights (naming the models that have them)."""
    checkpoint = model_cfg.get("checkpoint")
    if checkpoint:
        text = str(checkpoint)
        if "://" in text:
            raise StbiasError(
                f"model.checkpoint={text} is a URL; stbias reads local files only (download it "
                "first; model.pretrained=true fetches a model's published weights)"
            )
        if not os.path.isfile(os.path.expanduser(text)):
            raise StbiasError(
                f"model.checkpoint={text} does not exist; give a local weights file "
                "(.pyth, .ckpt, .pt) or model.checkpoint=null"
            )
    if model_cfg.get("pretrained") and not model_cfg.get("published_weights"):
        raise StbiasError(
            f"model {name} has no published weights (model.pretrained=true); models that have "
            f"them: {', '.join(models_with_published_weights())}. Train it (task=train) or "
            "give a weights file: model.checkpoint=/path/to/weights"
        )


def sha256_of(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_record(model_cfg: Any) -> dict[str, Any]:
    """What the model's weights are: ``random``, ``pretrained:<source>`` or ``file:<path>``.

    Returns ``{"weights": ..., "weights_sha256": <hex or None>}`` for results.json and the CSV.
    """
    checkpoint = model_cfg.get("checkpoint")
    if checkpoint:
        path = os.path.abspath(os.path.expanduser(str(checkpoint)))
        return {"weights": f"file:{path}", "weights_sha256": sha256_of(path)}
    if model_cfg.get("pretrained"):
        return {
            "weights": f"pretrained:{model_cfg.get('published_weights')}",
            "weights_sha256": None,
        }
    return {"weights": "random", "weights_sha256": None}


def weights_label(record: Mapping[str, Any]) -> str:
    """A short description of ``weights_record`` for titles and headers."""
    weights = str(record.get("weights", "random"))
    if weights == "random":
        return "random weights"
    if weights.startswith("file:"):
        sha = record.get("weights_sha256") or ""
        return f"{os.path.basename(weights[5:])}, sha256 {sha[:8]}"
    return weights.replace("pretrained:", "pretrained: ", 1)


def warn_if_random(model_cfg: Any, name: str) -> None:
    """One warning line when a model runs at its random initialisation."""
    if not model_cfg.get("checkpoint") and not model_cfg.get("pretrained"):
        log.warning(
            "model %s has random weights (no model.checkpoint, model.pretrained=false): "
            "the results describe the untrained architecture",
            name,
        )


def build_model(
    model_cfg: Any, new_head: int | None = None, checkpoint_settings: bool = True
) -> torch.nn.Module:
    """Instantiate ``model_cfg.builder`` and load ``model_cfg.checkpoint`` when one is given.

    Args:
        model_cfg: the ``model`` config node.
        new_head: training on ``new_head`` classes: a checkpoint whose classifier has another
            class count (Kinetics-400 weights fine-tuned on Diving48) loads all but the
            classifier, which keeps its fresh initialisation.
        checkpoint_settings: first adapt the builder to the network a ``task=train`` checkpoint
            records (see :func:`model_config_for_checkpoint`); off when the caller has set the
            config as it wants it.
    """
    if checkpoint_settings:
        model_cfg = model_config_for_checkpoint(model_cfg)
    return attach(build(model_cfg, new_head=new_head), model_cfg)
