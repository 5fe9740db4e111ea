"""StaticDropout (docs/training.md): dropout of the channels the probe finds static; baselines.

The static set of one layer comes from the probe itself: a :class:`~stbias.lit.probe.ProbeModule`
(pair views from the run's :class:`~stbias.stylization.PairSampler`, pooled features, one
:class:`~stbias.metrics.PairStatistics` per layer) over a fixed set of training clips, classified
at threshold λ as the unit-wise measure does. It is estimated before the first epoch and again
every ``refresh_every`` epochs.

During training only, a forward hook on the layer multiplies its output by a per-sample,
per-channel factor, the same over every other axis (time, space, tokens): for a dropped set ``D``
and probability ``q``, a unit of ``D`` is zeroed with probability ``q`` and otherwise scaled by
``1 / (1 - q)``; units outside ``D`` pass unchanged. The modes choose ``D`` and ``q``:

* ``static``: ``D`` = the static set ``S``, ``q = p``;
* ``all``: ``D`` = every unit, ``q = p·|S| / N`` (the same expected number of dropped units);
* ``random``: ``D`` = ``|S|`` units drawn at random (seeded by the run's seed and the refresh),
  ``q = p``.

Random streams: estimating the static set draws nothing from the training's random generators
(:func:`isolated_rng` restores PyTorch's CPU and CUDA generators, NumPy's and Python's around it),
and the dropout draws its masks from a private generator seeded by the run's seed and the process
rank. So a run whose dropped set is empty equals training without StaticDropout bit for bit, and
every arm of a comparison (``none``, ``static``, ``all``, ``random``) sees the same data order and
the same draws of the network's own dropout; :class:`DataOrder` records a checksum of that order.

This design is stbias's own: no public text gives the exact layer, probability, selection schedule
or baselines of Kowal et al.'s StaticDropout.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from stbias.data import video_to_float
from stbias.errors import StbiasError
from stbias.lit.classifier import shuffle_clips
from stbias.lit.probe import build_probe_module, layer_report
from stbias.models.inputs import InputSpec, pack_inputs
from stbias.models.taps import get_module, parse_path

log = logging.getLogger(__name__)
MODES = ("static", "all", "random")
_REPORTED = ("acc", "acc_shuffled", "acc_static_zeroed")
# the draw of the random units zeroed at test time (refreshes draw 0, 1, 2, ...)
TEST_DRAW = 2**31 - 1
UNITS = ("static", "static_joint")
INITS = ("trained", "start")


@dataclass(frozen=True)
class StaticDropoutSettings:
    """The ``train.static_dropout`` options, checked.

    Args:
        p: drop probability in [0, 1); 0 turns StaticDropout off.
        layer: the layer alias the dropout acts on (None only when ``p`` is 0 and the model
            declares no layers).
        path: that layer's module path.
        units: ``static`` (units classified static) or ``static_joint`` (static and joint).
        refresh_every: epochs between two estimates of the static set (>= 1).
        probe_clips: training clips the pairs are built from (>= 2).
        lam: the unit-wise threshold λ in (-1, 1).
        mode: ``static``, ``all`` or ``random`` (see the module docstring).
        init: ``trained`` (estimate from the model being trained) or ``start`` (once, from the
            weights training starts from).
    """

    p: float = 0.0
    layer: str | None = None
    path: str | None = None
    units: str = "static"
    refresh_every: int = 1
    probe_clips: int = 64
    lam: float = 0.5
    mode: str = "static"
    init: str = "trained"

    def __post_init__(self) -> None:
        key = "train.static_dropout"
        p = float(self.p)
        if not 0.0 <= p < 1.0 or np.isnan(p):
            raise StbiasError(f"{key}.p={self.p} is outside [0, 1); 0 turns StaticDropout off")
        if int(self.refresh_every) < 1:
            raise StbiasError(
                f"{key}.refresh_every={self.refresh_every}; give a number of epochs >= 1"
            )
        if int(self.probe_clips) < 2:
            raise StbiasError(
                f"{key}.probe_clips={self.probe_clips}; at least 2 clips are needed to score units"
            )
        lam = float(self.lam)
        if not -1.0 < lam < 1.0:
            raise StbiasError(f"{key}.lam={self.lam} is outside the valid range (-1, 1)")
        for name, value, valid in (
            ("mode", self.mode, MODES),
            ("units", self.units, UNITS),
            ("init", self.init, INITS),
        ):
            if value not in valid:
                raise StbiasError(f"{key}.{name}={value!r} is not valid; valid: {', '.join(valid)}")
        if p > 0 and not self.layer:
            raise StbiasError(
                f"{key}.p={self.p} needs a layer: the model declares none (set model.layers)"
            )

    @property
    def enabled(self) -> bool:
        """Whether dropout is applied (``p > 0``)."""
        return float(self.p) > 0


def default_layer(layers: Mapping[str, str]) -> str | None:
    """The default layer: ``pool`` (the pooled features before the classifier) if declared,
    else the last declared layer, else None."""
    if "pool" in layers:
        return "pool"
    return list(layers)[-1] if layers else None


def static_units(report: Mapping[str, Any], units: str, lam: float) -> np.ndarray:
    """Boolean mask ``(N,)`` of the units a probe report classifies ``units`` at threshold ``lam``.

    The unit-wise rule (docs/measures.md) on ``unit_scores``: static if only ``s_static > λ``,
    joint if both exceed λ (``units="static_joint"`` takes both); a dead unit (both scores 0)
    is in no set.
    """
    s_dyn = np.asarray(report["unit_scores"]["dynamic"], dtype=np.float64)
    s_stat = np.asarray(report["unit_scores"]["static"], dtype=np.float64)
    dead = (s_dyn == 0) & (s_stat == 0)
    above_d = (s_dyn > lam) & ~dead
    above_s = (s_stat > lam) & ~dead
    return above_s if units == "static_joint" else above_s & ~above_d


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """|a ∩ b| / |a ∪ b| of two boolean masks; 1 for two empty sets."""
    union = int(np.sum(a | b))
    return 1.0 if union == 0 else float(np.sum(a & b)) / union


def channel_shape(x: torch.Tensor, layout: str) -> tuple[int, ...]:
    """The shape ``(B, C, 1, ...)`` (``cnn``) or ``(B, 1, ..., C)`` of a per-channel factor."""
    if x.ndim == 2 or layout == "cnn":
        return (x.shape[0], x.shape[1]) + (1,) * (x.ndim - 2)
    return (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)


@contextmanager
def isolated_rng(device: torch.device | str | None = None) -> Iterator[None]:
    """Run a block without moving any random stream a training run draws from.

    PyTorch's CPU generator and, for a CUDA ``device``, that device's generator are forked
    (``torch.random.fork_rng``); NumPy's and Python's global generators are saved and restored.
    Whatever the block draws (loader seeds, shuffles, dropout in a model) leaves the streams as
    they were.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    cuda = []
    if device.type == "cuda":
        cuda = [device.index if device.index is not None else torch.cuda.current_device()]
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def private_seed(seed: int, rank: int = 0) -> int:
    """The seed of the dropout's private generator on process ``rank`` of a run seeded ``seed``."""
    state = np.random.SeedSequence((int(seed), int(rank), 0xD5)).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))  # below 2**63: a valid manual_seed on every device


class ChannelDropout(nn.Module):
    """Per-sample channel dropout of the units in ``dropped`` with probability ``q``.

    In training mode, ``forward(x)`` multiplies every unit ``c`` of ``dropped`` by
    ``Bernoulli(1 - q) / (1 - q)``, drawn per sample and channel and shared by every other axis;
    other units, and every unit in eval mode, pass unchanged. The draws come from a private
    generator per device (seeded by :meth:`seed`), never from PyTorch's global ones, so adding the
    dropout changes no other random draw of a run.

    Args:
        num_units: channels of the layer.
        layout: ``cnn`` (channels on axis 1) or a channels-last layout (see
            :mod:`stbias.models.taps`).
    """

    def __init__(self, num_units: int, layout: str = "cnn") -> None:
        super().__init__()
        self.num_units = int(num_units)
        self.layout = layout
        self.register_buffer("dropped", torch.zeros(self.num_units, dtype=torch.bool))
        self.q = 0.0
        self._seed = private_seed(0)
        self._generators: dict[str, torch.Generator] = {}

    def seed(self, value: int) -> None:
        """Restart the private generators from ``value``."""
        self._seed = int(value)
        self._generators = {}

    def generator(self, device: torch.device | str) -> torch.Generator:
        """The private generator of ``device`` (made, seeded, on first use)."""
        key = str(torch.device(device))
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=key).manual_seed(self._seed)
        return self._generators[key]

    def generator_states(self) -> dict[str, torch.Tensor]:
        """The private generators' states by device (for checkpoints)."""
        return {k: g.get_state() for k, g in self._generators.items()}

    def load_generator_states(self, states: Mapping[str, torch.Tensor]) -> None:
        """Restore what :meth:`generator_states` returned."""
        for key, state in states.items():
            self.generator(key).set_state(torch.as_tensor(state, dtype=torch.uint8).cpu())

    def set(self, dropped: np.ndarray | torch.Tensor, q: float) -> None:
        """Drop the units of the boolean mask ``dropped`` ``(N,)`` with probability ``q``."""
        mask = torch.as_tensor(np.asarray(dropped, dtype=bool))
        if mask.shape != (self.num_units,):
            raise StbiasError(f"a dropout mask of {tuple(mask.shape)} for {self.num_units} units")
        if not 0.0 <= float(q) < 1.0:
            raise StbiasError(f"drop probability {q} is outside [0, 1)")
        self.dropped = mask.to(self.dropped.device)
        self.q = float(q)

    def factor(self, batch: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """A fresh ``(batch, N)`` factor: 0 or ``1 / (1 - q)`` on dropped units, 1 elsewhere."""
        gen = self.generator(device)
        keep = torch.rand(batch, self.num_units, device=gen.device, generator=gen) >= self.q
        scaled = keep.to(dtype) / (1.0 - self.q)
        return torch.where(self.dropped.to(device), scaled, torch.ones_like(scaled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with its dropped units dropped (training mode only)."""
        if not self.training or self.q == 0.0 or not bool(self.dropped.any()):
            return x
        f = self.factor(x.shape[0], x.device, x.dtype)
        return x * f.view(channel_shape(x, self.layout))


def _replace(value: Any, indices: Sequence[int], fn: Callable[[torch.Tensor], torch.Tensor]):
    if not indices:
        return fn(value)
    items = list(value)
    items[indices[0]] = _replace(items[indices[0]], indices[1:], fn)
    return type(value)(items) if isinstance(value, tuple) else items


def hook_layer(
    model: nn.Module,
    path: str,
    fn: Callable[[torch.Tensor], torch.Tensor],
    model_name: str = "model",
    when: Callable[[nn.Module], bool] | None = None,
) -> Any:
    """Register a forward hook that replaces the output at ``path`` by ``fn(output)``.

    ``path`` is a layer path as in :mod:`stbias.models.taps` (``blocks.3[0]`` takes element 0 of
    a tuple output; the rest of the tuple passes unchanged). ``when(module)`` gates the hook.
    Returns the handle (``.remove()``).
    """
    module_path, indices = parse_path(path)
    module = get_module(model, module_path, model_name)

    def hook(mod: nn.Module, args: Any, output: Any) -> Any:
        if when is not None and not when(mod):
            return None
        return _replace(output, indices, fn)

    return module.register_forward_hook(hook)


@dataclass
class ProbeSetup:
    """What probing and evaluating a model during training needs (plain objects).

    Args:
        spec: the model's input spec.
        sampler: the pair sampler (``PairSampler``) of the run's stylization.
        probe_clips: the training clips the pairs are built from.
        layers: alias -> module path of every layer re-probed at the end (the dropout layer
            among them).
        channels: alias -> units of those layers.
        layout: the layers' output layout.
        include_cls: average the class token with the patch tokens.
        batch_size: clips per probe step.
        eval_batch_size: clips per evaluation step.
        seed: the run's seed (pairs, random sets, frame shuffling).
        model_name: for messages.
        label_key: the sample key of the class.
        val_set: the clips accuracy is measured on at the end (None: no accuracy).
        motion_classes: classes told apart only by motion, for a separate accuracy (or None).
        num_workers: loader workers of the probe clips and of the evaluation.
    """

    spec: InputSpec
    sampler: Callable[..., dict[str, Any]]
    probe_clips: Dataset
    layers: dict[str, str]
    channels: dict[str, int]
    layout: str = "cnn"
    include_cls: bool = False
    batch_size: int = 8
    eval_batch_size: int = 16
    seed: int = 0
    model_name: str = "model"
    label_key: str = "label"
    val_set: Dataset | None = None
    motion_classes: list[int] | None = field(default=None)
    num_workers: int = 0


def probe_units(
    model: nn.Module, setup: ProbeSetup, layers: Mapping[str, str], lam: float
) -> dict[str, dict[str, Any]]:
    """The probe's report (scores, split, unit classes, unit scores) of ``layers`` of ``model``.

    Runs :class:`ProbeModule` over ``setup.probe_clips`` on the model's device, in eval mode and
    without gradients, inside :func:`isolated_rng` (no random stream of the training moves); the
    model's mode and ``requires_grad`` flags are restored afterwards.
    """
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    was_training = model.training
    device = params[0].device if params else torch.device("cpu")
    try:
        with isolated_rng(device):
            return _probe_units(model, setup, layers, lam, device)
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        model.train(was_training)


def _probe_units(
    model: nn.Module,
    setup: ProbeSetup,
    layers: Mapping[str, str],
    lam: float,
    device: torch.device,
) -> dict[str, dict[str, Any]]:
    """The probe pass of :func:`probe_units` (its caller restores the model and streams)."""
    module = build_probe_module(
        model,
        layers,
        setup.spec,
        setup.sampler,
        channels={a: setup.channels[a] for a in layers},
        layout=setup.layout,
        include_cls=setup.include_cls,
        seed=setup.seed,
        lam=lam,
        model_name=setup.model_name,
    ).to(device)
    loader = DataLoader(
        setup.probe_clips, setup.batch_size, shuffle=False, num_workers=setup.num_workers
    )
    try:
        with torch.no_grad():
            for i, batch in enumerate(loader):
                module.test_step(batch, i)
    finally:
        module.close()  # the layers' hooks off the network before it trains on
    return {alias: layer_report(module.stats[alias], lam) for alias in layers}


def evaluate(
    model: nn.Module,
    setup: ProbeSetup,
    *,
    shuffle: bool = False,
    zero: tuple[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """Top-1 / top-5 accuracy of ``model`` on ``setup.val_set`` (and on the motion-only classes).

    Runs inside :func:`isolated_rng`: no random stream of the caller moves.

    Args:
        shuffle: shuffle every clip's frames as ``train.shuffle_frames`` does for validation
            (permutations seeded by the run's seed and the clip index).
        zero: ``(layer path, mask (N,))``: zero those units of that layer (no rescaling).
    """
    if setup.val_set is None:
        return {}
    params = list(model.parameters())
    with isolated_rng(params[0].device if params else None):
        return _evaluate(model, setup, shuffle, zero)


def _evaluate(
    model: nn.Module,
    setup: ProbeSetup,
    shuffle: bool,
    zero: tuple[str, np.ndarray] | None,
) -> dict[str, float]:
    """The evaluation pass of :func:`evaluate`."""
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    was_training = model.training
    model.eval()
    handle = None
    if zero is not None:
        keep = torch.as_tensor(~np.asarray(zero[1], dtype=bool), device=device)

        def zero_units(x: torch.Tensor) -> torch.Tensor:
            f = keep.to(x.dtype).expand(x.shape[0], -1)
            return x * f.reshape(channel_shape(x, setup.layout))

        handle = hook_layer(model, zero[0], zero_units, setup.model_name)
    correct, correct5, labels_all = [], [], []
    try:
        loader = DataLoader(
            setup.val_set, setup.eval_batch_size, shuffle=False, num_workers=setup.num_workers
        )
        with torch.no_grad():
            for batch in loader:
                x = pack_inputs(video_to_float(batch["video"].to(device)), setup.spec)
                if shuffle:
                    index = [int(i) for i in torch.as_tensor(batch["index"]).tolist()]
                    x, _ = shuffle_clips(x, index, setup.seed)
                labels = torch.as_tensor(batch[setup.label_key]).long().to(device)
                logits = model(x)
                top = logits.topk(min(5, logits.shape[1]), dim=1).indices
                correct.append((top[:, 0] == labels).cpu())
                correct5.append((top == labels[:, None]).any(1).cpu())
                labels_all.append(labels.cpu())
    finally:
        if handle is not None:
            handle.remove()
        model.train(was_training)
    hit, hit5, labels = torch.cat(correct), torch.cat(correct5), torch.cat(labels_all)
    out = {"acc": float(hit.float().mean()), "acc5": float(hit5.float().mean())}
    if setup.motion_classes:
        subset = torch.isin(labels, torch.tensor(setup.motion_classes))
        if bool(subset.any()):
            out["acc_motion_only"] = float(hit[subset].float().mean())
    return out


def random_units(num_units: int, count: int, seed: int, draw: int) -> np.ndarray:
    """A boolean mask of ``count`` of ``num_units`` units, drawn from ``(seed, draw)``."""
    rng = np.random.default_rng([int(seed), int(draw), 0x5D])
    mask = np.zeros(num_units, dtype=bool)
    mask[rng.choice(num_units, int(count), replace=False)] = True
    return mask


def layer_summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON-friendly part of a probe report: scores, split, unit counts."""
    return {k: report[k] for k in ("scores", "percent", "dims", "units", "n_pairs", "lam")}


def final_report(
    model: nn.Module, settings: StaticDropoutSettings, setup: ProbeSetup
) -> dict[str, Any]:
    """The end-of-training report: re-probed split, accuracies, and the static units zeroed.

    Probes every layer of ``setup.layers`` of the trained model; on ``setup.val_set`` measures
    top-1 / top-5 accuracy, the accuracy on shuffled frames, and the accuracy with the layer's
    static units (``settings.units``, re-probed) zeroed at test time, and with as many randomly
    chosen units zeroed, for comparison. Drops are ``acc - acc_<variant>``.
    """
    reports = probe_units(model, setup, setup.layers, settings.lam)
    mask = static_units(reports[settings.layer], settings.units, settings.lam)
    out: dict[str, Any] = {
        "layer": settings.layer,
        "units": settings.units,
        "static_set": np.flatnonzero(mask).tolist(),
        "set_size": int(mask.sum()),
        "probe": {alias: layer_summary(r) for alias, r in reports.items()},
    }
    if setup.val_set is None:
        return out
    plain = evaluate(model, setup)
    random_mask = random_units(mask.size, int(mask.sum()), setup.seed, TEST_DRAW)
    variants = {
        "shuffled": evaluate(model, setup, shuffle=True),
        "static_zeroed": evaluate(model, setup, zero=(settings.path, mask)),
        "random_zeroed": evaluate(model, setup, zero=(settings.path, random_mask)),
    }
    out.update(plain)
    for name, result in variants.items():
        for key, value in result.items():
            if key == "acc5":
                continue
            suffix = key[len("acc") :]
            out[f"acc_{name}{suffix}"] = value
            out[f"drop_{name}{suffix}"] = plain[key] - value
    return out


class StaticDropout(pl.Callback):
    """Estimates the static set, applies the dropout in training, reports at the end.

    Attach to a ``Trainer`` fitting a module whose network is ``pl_module.model`` (the
    :class:`~stbias.lit.classifier.VideoClassifier`). After ``fit``, ``history`` holds one entry
    per estimate (epoch, step, set size, Jaccard overlap with the previous set, the layer's split)
    and ``report`` the :func:`final_report` (on the global-zero process).
    """

    def __init__(self, settings: StaticDropoutSettings, setup: ProbeSetup) -> None:
        if not settings.enabled:
            raise StbiasError("StaticDropout needs train.static_dropout.p > 0")
        self.settings = settings
        self.setup_ = setup
        self.num_units = int(setup.channels[settings.layer])
        self.dropout = ChannelDropout(self.num_units, setup.layout)
        self.history: list[dict[str, Any]] = []
        self.report: dict[str, Any] = {}
        self._static: np.ndarray | None = None
        self._initial: dict[str, Any] | None = None
        self._handle: Any = None

    @property
    def state_key(self) -> str:
        return "StaticDropout"

    @staticmethod
    def _model(pl_module: pl.LightningModule) -> nn.Module:
        return getattr(pl_module, "model", pl_module)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Hook the dropout onto the layer (it acts in training mode only); seed its draws."""
        if stage != "fit" or self._handle is not None:
            return
        rank = int(getattr(trainer, "global_rank", 0) or 0)
        self.dropout.seed(private_seed(self.setup_.seed, rank))
        self._handle = hook_layer(
            self._model(pl_module),
            self.settings.path,
            self.dropout,
            self.setup_.model_name,
            when=lambda module: module.training,
        )

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Remove the hook: the trained network is left as it was built."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _estimate(self, model: nn.Module) -> dict[str, Any]:
        s = self.settings
        if s.init == "start" and self._initial is not None:
            return self._initial
        report = probe_units(model, self.setup_, {s.layer: s.path}, s.lam)[s.layer]
        if self._initial is None:
            self._initial = report
        return report

    def refresh(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """Estimate the static set now and set the dropout's units and probability."""
        s = self.settings
        report = self._estimate(self._model(pl_module))
        mask = static_units(report, s.units, s.lam)
        # every process drops the set of process 0 (their estimates agree up to rounding)
        mask = np.asarray(trainer.strategy.broadcast(mask, src=0), dtype=bool)
        draw = len(self.history)
        size = int(mask.sum())
        if s.mode == "static":
            dropped, q = mask, s.p
        elif s.mode == "all":
            dropped, q = np.ones(self.num_units, dtype=bool), s.p * size / self.num_units
        else:
            dropped, q = random_units(self.num_units, size, self.setup_.seed, draw), s.p
        self.dropout.set(dropped, q)
        entry = {
            "epoch": int(trainer.current_epoch),
            "step": int(trainer.global_step),
            "set_size": size,
            "jaccard": None if self._static is None else jaccard(mask, self._static),
            "dropped_units": int(dropped.sum()),
            "drop_probability": float(q),
            "expected_dropped": float(q * dropped.sum()),
            "static_set": np.flatnonzero(mask).tolist(),
            "dropped_set": np.flatnonzero(dropped).tolist(),
            "layer": layer_summary(report),
        }
        self._static = mask
        self.history.append(entry)
        metrics = {"static_dropout/set_size": float(size)}
        if entry["jaccard"] is not None:
            metrics["static_dropout/jaccard"] = entry["jaccard"]
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        overlap = "" if entry["jaccard"] is None else f", Jaccard {entry['jaccard']:.3f}"
        (log.info if trainer.is_global_zero else log.debug)(
            "StaticDropout, epoch %d: %d of %d units of %s static%s; dropping %d units with p=%.3f",
            entry["epoch"],
            size,
            self.num_units,
            s.layer,
            overlap,
            entry["dropped_units"],
            q,
        )
        return entry

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Estimate before the first epoch and every ``refresh_every`` epochs."""
        epoch = int(trainer.current_epoch)
        if self._static is None or epoch % int(self.settings.refresh_every) == 0:
            self.refresh(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Re-probe the trained model and measure it (process 0 only)."""
        if trainer.is_global_zero:
            self.report = r = final_report(self._model(pl_module), self.settings, self.setup_)
            units = r["probe"][self.settings.layer]["units"]
            log.info(
                "StaticDropout, trained %s: units dynamic/static/joint/residual %d/%d/%d/%d; "
                "top-1 %s, shuffled frames %s, static units zeroed %s",
                self.settings.layer,
                *(units[c] for c in ("dynamic", "static", "joint", "residual")),
                *(f"{r[k]:.4f}" if k in r else "n/a" for k in _REPORTED),
            )

    def state_dict(self) -> dict[str, Any]:
        """The current sets and history, so that a resumed run goes on with them."""
        return {
            "history": self.history,
            "static": None if self._static is None else self._static.tolist(),
            "dropped": self.dropout.dropped.cpu().tolist(),
            "q": self.dropout.q,
            "generators": self.dropout.generator_states(),
            "initial": None
            if self._initial is None
            else {
                "unit_scores": {
                    k: np.asarray(v).tolist() for k, v in self._initial["unit_scores"].items()
                },
                **layer_summary(self._initial),
            },
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.history = list(state_dict.get("history", []))
        static = state_dict.get("static")
        self._static = None if static is None else np.asarray(static, dtype=bool)
        if state_dict.get("dropped") is not None:
            self.dropout.set(np.asarray(state_dict["dropped"], dtype=bool), state_dict["q"])
        self._initial = state_dict.get("initial")
        self.dropout.load_generator_states(state_dict.get("generators") or {})

    def summary(self) -> dict[str, Any]:
        """Settings, per-refresh history and the final report, for ``results.json``."""
        return {
            "settings": asdict(self.settings),
            "refreshes": self.history,
            "final": self.report,
        }


class DataOrder(pl.Callback):
    """Records the order in which training clips arrive: a SHA-1 of every batch's ``index``.

    Runs that should see the same data (the arms of ``task=static_dropout``, one seed) compare
    their ``checksum``; it is None when batches carry no ``index``. On several processes each
    records its own shard's order.
    """

    def __init__(self, index_key: str = "index") -> None:
        self.index_key = index_key
        self._digest = hashlib.sha1()
        self.batches = 0
        self._complete = True

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Add this batch's clip indices to the digest."""
        index = batch.get(self.index_key) if isinstance(batch, Mapping) else None
        if index is None:
            self._complete = False
            return
        values = np.asarray(torch.as_tensor(index).detach().cpu().numpy(), dtype=np.int64)
        self._digest.update(values.tobytes())
        self.batches += 1

    @property
    def checksum(self) -> str | None:
        """The digest of every training batch's indices so far (None if some had none)."""
        return self._digest.hexdigest() if self._complete and self.batches else None
