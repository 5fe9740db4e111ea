"""Helpers the tasks share: turning config nodes into objects."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict
from torch.utils.data import Dataset, Subset

from stbias.data.loading import LOADER_KEYS
from stbias.data.subsets import choose_clips
from stbias.errors import StbiasError
from stbias.models.inputs import InputSpec
from stbias.models.registry import attach, build
from stbias.record import check_results  # noqa: F401 - the tasks import it from here
from stbias.tasks.loggers import build_logger, finish_logger, log_run  # noqa: F401 - tasks import build_logger from here

log = logging.getLogger(__name__)

# hyper_parameters key under which task=train stores the model config changes it made
# (num_classes, in_channels, input channels) so that the checkpoint rebuilds its network
MODEL_OVERRIDES = "model_overrides"


def plain(node: Any) -> Any:
    """A config node as plain Python containers (interpolations resolved); None stays None."""
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def resolved(cfg: Any) -> Any:
    """The whole config as plain containers, interpolations resolved where they resolve.

    A task records its config; a node it does not use (the dataset of ``task=weights``) may hold
    interpolations that cannot resolve without a model input spec, and is then kept as written.
    """
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001 - omegaconf raises several interpolation errors
        return OmegaConf.to_container(cfg, resolve=False)


def output_dir() -> str:
    """The run directory: Hydra's output folder under ``run.py``, the working directory else."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.output_dir)
    return os.getcwd()


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
    from stbias.io import load_tensors

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
    from stbias.config import CONF_DIR

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


def device_label(trainer_cfg: Any) -> str:
    """``cpu, 1 process`` / ``gpu, 8 processes (ddp)``: where the trainer node runs."""
    devices = trainer_cfg.get("devices", 1)
    nodes = int(trainer_cfg.get("num_nodes", 1) or 1)
    count = "all visible" if devices in (-1, "auto") else int(devices) * nodes
    strategy = str(trainer_cfg.get("strategy", "auto"))
    plural = "" if count == 1 else "es"
    return f"{trainer_cfg.get('accelerator', 'cpu')}, {count} process{plural}" + (
        f" ({strategy})" if strategy != "auto" else ""
    )


def build_trainer(
    trainer_cfg: Any,
    *,
    logger: Any = False,
    callbacks: Sequence[Any] = (),
    fixed: Mapping[str, Any] | None = None,
    task: str = "this task",
    progress: str | None = None,
    **defaults: Any,
) -> Any:
    """The Lightning ``Trainer`` of the ``trainer`` node, built as Lightning+Hydra projects do.

    ``instantiate(cfg.trainer, logger=..., callbacks=...)``: every key of the node is a Trainer
    argument and means what Lightning says. The task adds its logger and callbacks (after those
    of ``trainer.callbacks``, a list of callback configs).

    Args:
        trainer_cfg: the ``trainer`` config node (``_target_: pytorch_lightning.Trainer``).
        logger: the logger built from the ``logger`` group (``False`` for none).
        callbacks: the task's own callbacks.
        fixed: arguments the task needs set one way (the probe: no distributed sampler); a node
            that sets one of them to another value is an error naming the key.
        task: the task's name, for that error.
        progress: what the progress bar says (one bar per phase, with an ETA) while
            ``trainer.enable_progress_bar`` is true and no progress bar callback is given.
        **defaults: arguments used unless the node sets them (e.g. ``default_root_dir``).
    """
    node = copy.deepcopy(trainer_cfg)
    with open_dict(node):
        if "logger" in node:
            raise StbiasError(
                "trainer.logger is not set through the trainer node: choose logger=wandb|csv|none "
                "(and logger.<key>=... for its settings)"
            )
        extra = plain(node.pop("callbacks", None)) or []
        if not isinstance(extra, list) or not all(isinstance(c, Mapping) for c in extra):
            raise StbiasError(
                "trainer.callbacks must be a list of callback configs, e.g. "
                "'+trainer.callbacks=[{_target_: pytorch_lightning.callbacks.RichModelSummary}]'"
            )
        for key, value in (fixed or {}).items():
            if node.get(key) is not None and plain(node[key]) != value:
                raise StbiasError(
                    f"trainer.{key}={plain(node[key])} cannot be used with {task}, which needs "
                    f"{key}={value}; leave trainer.{key} unset"
                )
            node.pop(key, None)
        for key, value in defaults.items():
            if node.get(key) is None:
                node[key] = value
    from pytorch_lightning.callbacks.progress import ProgressBar

    from stbias.lit.progress import PhaseProgressBar

    user_callbacks = [instantiate(c) for c in extra]
    callbacks = [*user_callbacks, *callbacks]
    wants_bar = node.get("enable_progress_bar", True) is not False
    if wants_bar and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(PhaseProgressBar(progress))
    return instantiate(node, logger=logger, callbacks=callbacks, **dict(fixed or {}))


def trainer_setting_changed(cfg: Any, key: str) -> bool:
    """Whether ``trainer.<key>`` differs from the value of the chosen ``trainer`` option's file.

    True when the command line (``trainer.max_epochs=1``), an experiment or code set it.
    """
    from hydra.core.hydra_config import HydraConfig

    from stbias.config import compose

    chosen = None
    if HydraConfig.initialized():
        chosen = HydraConfig.get().runtime.choices.get("trainer")
    shipped = compose([f"trainer={chosen}"] if chosen else []).trainer
    return plain(cfg.trainer.get(key)) != plain(shipped.get(key))


def task_epochs(cfg: Any, default: Any) -> int:
    """The epochs of a task's own training: ``trainer.max_epochs`` where it was set (it means
    what Lightning says in every task), else the task's ``default`` (``task.train.max_epochs``)."""
    if trainer_setting_changed(cfg, "max_epochs"):
        return int(cfg.trainer.max_epochs)
    return int(default)


def choice(cfg: Any, group: str) -> str:
    """The option chosen for a config group: its ``name`` key, else Hydra's record of it."""
    from hydra.core.hydra_config import HydraConfig

    node = cfg.get(group)
    if node is not None and node.get("name"):
        return str(node.name)
    if HydraConfig.initialized():
        chosen = HydraConfig.get().runtime.choices.get(group)
        if chosen:
            return str(chosen)
    target = node.get("_target_") if node is not None else None
    return str(target).rsplit(".", 1)[-1] if target else "unknown"


# dataset key -> model input key: the clip geometry a dataset takes from the model it feeds
GEOMETRY = (("num_frames", "frames"), ("sampling_rate", "sampling_rate"), ("size", "size"))


def check_geometry(dataset_cfg: Any, spec: InputSpec) -> None:
    """Raise unless the dataset cuts clips at the model's input geometry (one source of truth).

    The dataset configs take ``num_frames``, ``sampling_rate`` and ``size`` from ``model.input``;
    a value set on the dataset that differs would feed the model clips it was not built for.
    """
    for key, model_key in GEOMETRY:
        value = dataset_cfg.get(key) if key in dataset_cfg else None
        if value is not None and int(value) != int(getattr(spec, model_key)):
            raise StbiasError(
                f"dataset.{key}={value} conflicts with model.input.{model_key}="
                f"{getattr(spec, model_key)}: clips are cut at the model's input; set "
                f"model.input.{model_key}={value} instead (dataset.{key} follows it)"
            )
    short_side = dataset_cfg.get("short_side") if "short_side" in dataset_cfg else None
    if short_side is not None and int(short_side) < int(spec.size):
        raise StbiasError(
            f"dataset.short_side={short_side} is smaller than model.input.size={spec.size}: "
            "frames are resized so that their shorter side is short_side, then cropped to size"
        )


def build_dataset(
    dataset_cfg: Any, spec: InputSpec, split: str | None = None, num_samples: int | None = None
) -> Dataset:
    """Instantiate a dataset whose clips fit the model's input spec.

    Args:
        dataset_cfg: the ``dataset`` config node (its geometry keys follow ``model.input``; see
            :func:`check_geometry`).
        spec: the model's input spec.
        split: replaces ``split`` (e.g. ``val``).
        num_samples: replaces ``num_samples`` (synthetic datasets); other datasets are cut to
            a seeded random subset of this many clips.
    """
    check_geometry(dataset_cfg, spec)
    dataset_cfg = copy.deepcopy(dataset_cfg)
    with open_dict(dataset_cfg):
        for key, value in (("split", split), ("num_samples", num_samples)):
            if key in dataset_cfg and value is not None:
                dataset_cfg[key] = value
        # DataLoader settings (num_workers, ...) travel in the node but are not the dataset's
        for key in LOADER_KEYS:
            dataset_cfg.pop(key, None)
    dataset = instantiate(dataset_cfg)
    if num_samples is not None and "num_samples" not in dataset_cfg and num_samples < len(dataset):
        picks = np.random.default_rng(0).choice(len(dataset), int(num_samples), replace=False)
        dataset = Subset(dataset, sorted(int(i) for i in picks))
    return dataset


# fixed Trainer arguments of the explanation tasks: gradients on, every clip once, no checkpoints
EXPLAIN_TRAINER = {
    "inference_mode": False,
    "use_distributed_sampler": False,
    "enable_checkpointing": False,
}


def explanation_clips(cfg: Any) -> Any:
    """The node that says which clips an explanation reads and how many at a time
    (``num_clips``, ``sampling``, ``batch_size``, ``num_workers``): the shared ``probe`` node."""
    return cfg.probe


def explanation_setup(cfg: Any, metric: str) -> tuple[str, InputSpec, Any, torch.nn.Module]:
    """The model name, input spec, chosen clips and model of the explanation task ``metric``."""
    if str(cfg.metric.get("name")) != metric:
        raise StbiasError(
            f"task={metric} takes its settings from metric={metric}, not "
            f"metric={cfg.metric.get('name')} (leave task unset)"
        )
    task = f"metric={metric}"
    name = choice(cfg, "model")
    require_one_model(cfg, task)
    apply_checkpoint_settings(cfg)
    check_weights(cfg.model, name)
    warn_if_random(cfg.model, name)
    spec = InputSpec.from_dict(plain(cfg.model.input))
    m = explanation_clips(cfg)
    dataset = build_dataset(cfg.dataset, spec)
    chosen = choose_clips(dataset, m.num_clips, str(m.sampling), int(cfg.seed), node="probe")
    if len(chosen) < len(dataset):
        dataset = Subset(dataset, chosen)
    return name, spec, dataset, build_model(cfg.model)


def run_explanation(
    cfg: Any,
    explainer: Any,
    dataset: Any,
    metric: str,
    detail: str = "",
    progress: str | None = None,
) -> tuple[Any, Any]:
    """Run an explanation method (``stbias.api.Explanation``) over ``dataset`` with the
    config's Trainer; returns the Trainer and the results (None on the other ranks).

    A header line says what runs, as the probe's does (``temporal_mask: i3d_tiny (random
    weights) | brushmnist_small, split test: 4 clips | 300 iterations per clip | cpu, 1
    process``); ``progress`` is what the progress bar says.
    """
    from stbias.lit.probe import EvalData

    m = explanation_clips(cfg)
    log.info(
        "%s: %s (%s) | %s, split %s: %d clips%s | %s",
        metric,
        choice(cfg, "model"),
        weights_label(weights_record(cfg.model)),
        choice(cfg, "dataset"),
        cfg.dataset.get("split"),
        len(dataset),
        f" | {detail}" if detail else "",
        device_label(cfg.trainer),
    )
    trainer = build_trainer(
        cfg.trainer, fixed=EXPLAIN_TRAINER, task=f"metric={metric}", progress=progress
    )
    data = EvalData(dataset, m.batch_size, m.num_workers)
    return trainer, explainer.run(data, trainer=trainer)


def base_dataset(dataset: Any) -> Any:
    """The dataset under any ``Subset`` wrappers (``None`` stays ``None``)."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def dataset_indices(dataset: Any) -> list[int]:
    """The base-dataset index of every clip of ``dataset`` (a ``Subset`` or a dataset)."""
    if isinstance(dataset, Subset):
        return [int(i) for i in dataset.indices]
    return list(range(len(dataset)))


def clip_by_index(dataset: Any, index: int) -> dict[str, Any]:
    """The sample whose base-dataset index is ``index``."""
    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    return base[int(index)]


def skipped_note(record: Mapping[str, Any]) -> str:
    """`` (N unreadable videos skipped)`` for a summary line, or nothing when none was."""
    skipped = int(record.get("skipped_clips") or 0)
    return f" ({skipped} unreadable videos skipped)" if skipped else ""


def report_explanation(
    cfg: Any,
    task: str,
    prefix: str,
    folder: str,
    record: dict[str, Any],
    objects: dict[str, Any],
    summary: str,
) -> None:
    """An explanation task's last steps: summary line, a named logger run, where results are."""
    from stbias.tasks.loggers import run_identity

    log.info("%s", summary)
    identity = run_identity(task, record["model"], record["dataset"])
    logger = build_logger(cfg.get("logger"), folder, **identity)
    log_explanation(logger, record, objects["figures"], prefix, folder)
    log.info("results: %s", os.path.join(folder, "results.json"))


def log_explanation(
    logger: Any, record: dict[str, Any], figures: list[str], prefix: str, folder: str | None = None
) -> None:
    """Summary statistics under ``<prefix>/...`` (with the interval of the mean where there is
    one), the per-clip table, the figures and the run's files (``results.json``, masks or maps)
    as an artifact; then close."""
    from stbias.tasks.loggers import record_config, run_files

    summary: dict[str, float] = {}
    for key, value in record["summary"].items():
        if isinstance(value, dict) and "mean" in value:
            for stat in ("mean", "std", "n"):
                if value.get(stat) is not None:
                    summary[f"{prefix}/{key}_{stat}"] = float(value[stat])
            if value.get("ci") is not None:
                summary[f"{prefix}/{key}_lo"], summary[f"{prefix}/{key}_hi"] = map(
                    float, value["ci"]
                )
    rows = record.get("clips") or []
    columns = list(rows[0]) if rows else []
    log_run(
        logger,
        config=record_config(record, "layer"),
        summary=summary,
        tables={f"{prefix}/clips": (columns, [[r.get(c) for c in columns] for r in rows])}
        if rows
        else None,
        images={f"{prefix}/figures": figures},
        files=run_files(folder) if folder else (),
    )
    finish_logger(logger)


def choose_probe_clips(cfg: Any, spec: InputSpec) -> Any:
    """The dataset of ``cfg`` cut to the clips ``probe.num_clips`` and ``probe.sampling`` choose."""
    dataset = build_dataset(cfg.dataset, spec)
    chosen = choose_clips(dataset, cfg.probe.num_clips, str(cfg.probe.sampling), int(cfg.seed))
    return Subset(dataset, chosen) if len(chosen) < len(dataset) else dataset
