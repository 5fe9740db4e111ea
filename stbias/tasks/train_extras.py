"""What ``task=train`` adds on request: StaticDropout and a checkpoint series.

``train.static_dropout`` (p > 0) attaches :class:`~stbias.lit.static_dropout.StaticDropout`;
``train.checkpoint_every`` keeps a checkpoint series (:mod:`stbias.lit.series`). Every run records
the order of its training clips (:class:`~stbias.lit.static_dropout.DataOrder`), so runs meant to
see the same data can be checked. Both are checked
by :func:`check` before anything is built, so a bad value stops the run at once.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from torch import nn
from torch.utils.data import Dataset, Subset

from stbias.data.subsets import choose_clips
from stbias.errors import StbiasError
from stbias.lit.series import parse_every, series_callbacks
from stbias.lit.static_dropout import (
    DataOrder,
    ProbeSetup,
    StaticDropout,
    StaticDropoutSettings,
    default_layer,
)
from stbias.models.inputs import InputSpec
from stbias.models.taps import infer_channels, select_layers
from stbias.tasks.dataset_setup import base_dataset
from stbias.tasks.run_config import plain


def dropout_settings(cfg: Any) -> StaticDropoutSettings:
    """``train.static_dropout`` checked against the model's layers (raises on a bad value)."""
    node = dict(plain(cfg.train.get("static_dropout")) or {})
    layers = {str(k): str(v) for k, v in (plain(cfg.model.get("layers")) or {}).items()}
    name = str(cfg.model.get("name", "model"))
    alias = node.pop("layer", None)
    if alias is not None:
        if str(alias) not in layers:
            valid = ", ".join(layers) or "none declared (set model.layers)"
            raise StbiasError(
                f"train.static_dropout.layer={alias!r} is not a layer of {name}; layers: {valid}"
            )
        alias = str(alias)
    else:
        alias = default_layer(layers)
    path = layers.get(alias) if alias else None
    return StaticDropoutSettings(layer=alias, path=path, probe_clips=cfg.probe.num_clips, **node)


def check(cfg: Any) -> None:
    """Stop with one line on a bad ``train.static_dropout`` or ``train.checkpoint_every``."""
    dropout_settings(cfg)
    parse_every(cfg.train.get("checkpoint_every"))


def probe_setup(
    cfg: Any,
    model: nn.Module,
    spec: InputSpec,
    train_set: Dataset,
    val_set: Dataset | None,
    settings: StaticDropoutSettings,
) -> ProbeSetup:
    """The probe clips, pair sampler and evaluation data of a training run."""
    name = str(cfg.model.get("name", "model"))
    layers = select_layers(plain(cfg.model.get("layers")) or {}, None, name)
    channels = dict(plain(cfg.model.get("channels")) or {})
    layout = str(cfg.model.get("layout", "cnn"))
    undeclared = {a: p for a, p in layers.items() if a not in channels}
    if undeclared:
        was_training = model.training
        channels.update(infer_channels(model, undeclared, spec, layout, name))
        model.train(was_training)
    chosen = choose_clips(
        train_set, int(settings.probe_clips), str(cfg.probe.sampling), int(cfg.seed)
    )
    motion = getattr(base_dataset(val_set), "motion_only_classes", None)
    return ProbeSetup(
        spec=spec,
        sampler=instantiate(cfg.stylization),
        probe_clips=Subset(train_set, chosen),
        layers=layers,
        channels={a: int(channels[a]) for a in layers},
        layout=layout,
        include_cls=bool(cfg.probe.include_cls),
        batch_size=int(cfg.probe.batch_size),
        eval_batch_size=int(cfg.train.batch_size),
        seed=int(cfg.seed),
        model_name=name,
        label_key=str(cfg.train.label_key),
        val_set=val_set,
        motion_classes=list(motion) if motion else None,
        num_workers=int(cfg.train.num_workers),
    )


def training_callbacks(
    cfg: Any,
    model: nn.Module,
    spec: InputSpec,
    train_set: Dataset,
    val_set: Dataset | None,
    checkpoint_dir: str,
) -> list[pl.Callback]:
    """The data-order record, the StaticDropout callback (p > 0) and the checkpoint-series
    callbacks (if requested)."""
    callbacks: list[pl.Callback] = [DataOrder()]
    every = parse_every(cfg.train.get("checkpoint_every"))
    if every is not None:
        callbacks += series_callbacks(checkpoint_dir, every)
    settings = dropout_settings(cfg)
    if settings.enabled:
        setup = probe_setup(cfg, model, spec, train_set, val_set, settings)
        callbacks.append(StaticDropout(settings, setup))
    return callbacks


def training_record(callbacks: list[pl.Callback]) -> dict[str, Any]:
    """``data_order`` (checksum of the training clips' order) and ``static_dropout`` (settings,
    refreshes, final report; if used) for ``results.json``."""
    record: dict[str, Any] = {}
    for callback in callbacks:
        if isinstance(callback, DataOrder):
            record["data_order"] = callback.checksum
        if isinstance(callback, StaticDropout):
            record["static_dropout"] = callback.summary()
    return record
