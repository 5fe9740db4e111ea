"""The Python API: construction apart from the call, as in Captum.

```python
import stbias
from stbias import GradCAM, Probe

model = stbias.models.create("i3d_tiny")   # carries its layers, input spec and name
res = Probe(model).run(clips)    # clips: (N, T, H, W, C) uint8, or float in [0, 1]; a Dataset
res.table()                      # pandas DataFrame, one row per layer
res.plot()                       # the Fig. 3 figure
res.at(lam=0.3)                  # the same sums re-thresholded
res.save("runs/probe")           # a run directory: stbias.results.load and task=compare read it
GradCAM(model, layer="res3").run(clips).save("runs/gradcam")
```

``Probe``, ``GradCAM`` and ``TemporalMask`` share one shape: a model, its layers (aliases,
module paths or module objects) and settings at construction; ``run`` takes the same clips
(:data:`CLIPS`); the results have ``table()``, ``plot()`` and ``save(folder)``. The command-line
tasks build these very objects, so both give the same numbers on the same clips. Arguments are
checked where they are given: a wrong type raises ``TypeError``, a wrong value (clips that do not
match the input spec, a λ outside (-1, 1), an unknown layout) ``ValueError``, each naming the
argument and what it takes. ``WeightTemporality`` is the weight-only twin
(``stbias.metrics.weights``), whose results also have ``table()`` and ``plot()``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from stbias import io
from stbias.data import video_to_float
from stbias.data.subsets import clip_info
from stbias.errors import StbiasError
from stbias.lit.explain import BatchExplainModule, GradCAMModule, TemporalMaskModule, packer
from stbias.lit.probe import EvalData, build_probe_module, layer_report
from stbias.metrics import PairStatistics
from stbias.metrics.gradcam import DEFAULT_EPS as GRADCAM_EPS
from stbias.metrics.gradcam import GradCAM as GradCAMExplainer
from stbias.metrics.masks import SEARCH_SETTINGS, TARGET_CLASSES, freeze, summarize
from stbias.metrics.masks import TemporalMask as MaskExplainer
from stbias.metrics.pairs import ESTIMATORS
from stbias.metrics.weights import TemporalConv, check_rule, temporal_convs, weight_temporality
from stbias.models.inputs import InputSpec
from stbias.models.registry import ModelInfo, model_info
from stbias.models.taps import LAYOUTS, get_module, parse_path
from stbias.plotting import save_animation, save_figure
from stbias.plotting.explain import (
    draw_table,
    gradcam_strip,
    mask_strip,
    overlay,
    table3,
    table4,
    table_rows,
)
from stbias.plotting.pairs import fig3
from stbias.plotting.weights import plot_asdt, plot_temporal_channels
from stbias.record import random_note, write_results
from stbias.reporting import lightning_quiet
from stbias.results import layer_rows
from stbias.stylization import PairSampler, Stylizer, TextureStylizer

__all__ = [
    "CLIPS",
    "Explanation",
    "ExplanationResults",
    "GradCAM",
    "GradCAMResults",
    "Probe",
    "ProbeResults",
    "TemporalMask",
    "TemporalMaskResults",
    "WeightTemporality",
]


def _type_error(name: str, value: Any, valid: str) -> TypeError:
    shown = " ".join(repr(value).split())[:80]
    return TypeError(f"{name} takes {valid}; got {type(value).__name__} {shown}")


def _integer(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(name, value, f"an integer >= {low}")
    if value < low:
        raise StbiasError(f"{name}={value} is not valid; {name} takes an integer >= {low}")
    return int(value)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise _type_error(name, value, f"one of {', '.join(choices)}")
    if value not in choices:
        raise StbiasError(f"unknown {name} {value!r}; valid: {', '.join(choices)}")
    return value


def _lam(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _type_error("lam", value, "a number in (-1, 1)")
    if not (math.isfinite(value) and -1 < value < 1):
        raise StbiasError(f"lam={value} is not valid; lam takes a number in (-1, 1)")
    return float(value)


def _names(name: str, value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _type_error(name, value, f"a mapping {what}")
    for key in value:
        if not isinstance(key, str):
            raise _type_error(f"a key of {name}", key, "a layer alias (str)")
    return dict(value)


CLIPS = (
    "clips (N, T, H, W, C) as a uint8 tensor (0..255) or a float tensor in [0, 1], a Dataset "
    "of samples {'video': (T, H, W, C), 'index'[, 'label']}, or a DataLoader of their batches"
)


def check_clip_shape(shape: tuple[int, ...], spec: InputSpec, what: str) -> None:
    """Refuse clips ``(..., T, H, W, C)`` that are not at the input spec's geometry."""
    frames, height, width, channels = shape[-4:]
    expected = (spec.frames, spec.size, spec.size)
    if (frames, height, width) != expected or channels not in (spec.channels, 1):
        raise StbiasError(
            f"{what} are (T, H, W, C) = {(frames, height, width, channels)}, but the input spec "
            f"takes {(*expected, spec.channels)} (frames={spec.frames}, size={spec.size}, "
            f"channels={spec.channels}; 1-channel clips also fit an RGB model): read the clips "
            "at the model's geometry, or give the input_spec the model was built for"
        )


def _check_clip_tensor(clips: Any, what: str) -> torch.Tensor:
    if (
        not torch.is_tensor(clips)
        or clips.ndim != 5
        or not (clips.dtype == torch.uint8 or clips.is_floating_point())
    ):
        shape = tuple(clips.shape) if torch.is_tensor(clips) else type(clips).__name__
        dtype = f" of dtype {clips.dtype}" if torch.is_tensor(clips) else ""
        raise StbiasError(f"{what} takes {CLIPS}; got {shape}{dtype}")
    if clips.is_floating_point() and clips.numel():
        low, high = float(clips.min()), float(clips.max())
        if not (math.isfinite(low) and math.isfinite(high) and low >= 0 and high <= 1):
            raise StbiasError(
                f"{what}: float clips are in [0, 1] (N, T, H, W, C); these span [{low}, {high}] "
                "(uint8 clips hold 0..255)"
            )
    return clips


class ClipTensorDataset(Dataset):
    """Samples ``{"video", "index"[, "label"]}`` over a ``(N, T, H, W, C)`` tensor of clips
    (uint8, or float in [0, 1])."""

    def __init__(self, clips: torch.Tensor, labels: Any = None, what: str = "Probe.run") -> None:
        self.clips = _check_clip_tensor(clips, what)
        if clips.shape[0] == 0:
            raise StbiasError(f"{what} got no clips (N = 0)")
        self.labels = None if labels is None else torch.as_tensor(labels).long().reshape(-1)
        if self.labels is not None and len(self.labels) != len(clips):
            raise StbiasError(f"{what}: {len(self.labels)} labels for {len(clips)} clips")

    def __len__(self) -> int:
        return int(self.clips.shape[0])

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = {"video": self.clips[index], "index": int(index)}
        if self.labels is not None:
            sample["label"] = int(self.labels[index])
        return sample


class _LoaderData(EvalData):
    """A DataLoader the user built, handed to the test loop as it is."""

    def __init__(self, loader: DataLoader) -> None:
        super().__init__(loader.dataset, loader.batch_size or 1)
        self.loader = loader

    def test_dataloader(self) -> DataLoader:
        return self.loader


def _check_dataset(dataset: Any, spec: InputSpec, what: str) -> None:
    """Refuse an empty dataset, or one whose first sample is not a clip at the spec."""
    try:
        size = len(dataset)
    except TypeError:
        return  # an iterable dataset: its samples are checked as they come
    if size == 0:
        raise StbiasError(f"{what} got an empty dataset")
    sample = dataset[0]
    if not isinstance(sample, Mapping) or "video" not in sample:
        raise _type_error(
            "a Dataset sample", sample, "a dict with 'video' (T, H, W, C) and 'index'"
        )
    video = sample["video"]
    ok = torch.is_tensor(video) and video.ndim == 4
    if not ok or not (video.dtype == torch.uint8 or video.is_floating_point()):
        shape = tuple(video.shape) if hasattr(video, "shape") else type(video).__name__
        raise StbiasError(f"a Dataset sample's 'video' is {shape}; {what} takes {CLIPS}")
    check_clip_shape(tuple(video.shape), spec, "the dataset's clips")


def clip_data(
    clips: Any, spec: InputSpec, batch_size: int, what: str, labels: Any = None
) -> EvalData:
    """The evaluation data of ``clips`` (see :data:`CLIPS`; a task's ``EvalData`` as it is)."""
    if isinstance(clips, EvalData):
        return clips
    if isinstance(clips, DataLoader):
        _check_dataset(clips.dataset, spec, what)
        return _LoaderData(clips)
    if torch.is_tensor(clips):
        dataset = ClipTensorDataset(clips, labels, what)
        check_clip_shape(tuple(clips.shape), spec, "the clips")
        return EvalData(dataset, batch_size)
    if isinstance(clips, Dataset):
        _check_dataset(clips, spec, what)
        return EvalData(clips, batch_size)
    raise _type_error(what, clips, CLIPS)


def _trainer(accelerator: str, progress: bool, inference_mode: bool = True) -> Any:
    return pl.Trainer(
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        use_distributed_sampler=False,
        inference_mode=inference_mode,
    )


def _spec(input_spec: Any, info: ModelInfo | None, what: str) -> InputSpec:
    if input_spec is None:
        if info is None or info.spec is None:
            raise StbiasError(
                f"{what} needs input_spec= for a model not made by stbias.models.create "
                "(an InputSpec or a mapping of its fields)"
            )
        return info.spec
    if isinstance(input_spec, InputSpec):
        return input_spec
    if isinstance(input_spec, Mapping):
        try:
            return InputSpec.from_dict(dict(input_spec))
        except StbiasError:
            raise
        except (TypeError, ValueError) as err:
            raise StbiasError(
                f"input_spec {dict(input_spec)!r} is not valid ({err}); see "
                "stbias.models.inputs.InputSpec for its fields"
            ) from None
    raise _type_error("input_spec", input_spec, "an InputSpec or a mapping of its fields")


def _module_path(model: nn.Module, module: nn.Module, what: str) -> str:
    for path, candidate in model.named_modules():
        if candidate is module:
            return path
    raise StbiasError(
        f"{what}: the {type(module).__name__} given is not a module of the model (give a module "
        "of this model, its path such as 'blocks.4', or a layer alias)"
    )


def _one_layer(model: nn.Module, layer: Any, info: ModelInfo | None, what: str) -> tuple[str, str]:
    """``(alias, module path)`` of a layer given as an alias, a module path or a module."""
    declared = info.layers if info is not None else {}
    if isinstance(layer, nn.Module):
        path = _module_path(model, layer, what)
        alias = next((a for a, p in declared.items() if p == path), path)
        return alias, path
    if not isinstance(layer, str):
        raise _type_error(what, layer, "a layer alias, a module path or a module of the model")
    if layer in declared:
        return layer, declared[layer]
    module_path, _ = parse_path(layer)
    try:
        get_module(model, module_path, info.name if info else "model")
    except StbiasError:
        aliases = f"layer aliases: {', '.join(declared)}; " if declared else ""
        raise StbiasError(
            f"unknown layer {layer!r}: neither a layer alias nor a module path of the model "
            f"({aliases}python run.py task=layers lists the module paths)"
        ) from None
    return next((a for a, p in declared.items() if p == layer), layer), layer


def resolve_layers(
    model: nn.Module, layers: Any, info: ModelInfo | None, what: str = "layers"
) -> dict[str, str]:
    """Alias -> module path of ``layers``: a mapping alias -> path or module, or one or a list of
    aliases, module paths and modules (None: the model's ``probe_layers``)."""
    if layers is None:
        if info is None or not info.layers:
            raise StbiasError(
                f"{what} is needed for a model that declares no layers: aliases, module paths "
                "or modules of the model, or a mapping {alias: module path}"
            )
        return info.default_probe_layers()
    if isinstance(layers, Mapping):
        out = {}
        for alias, layer in layers.items():
            if not isinstance(alias, str):
                raise _type_error(f"a key of {what}", alias, "a layer alias (str)")
            if isinstance(layer, str):
                out[alias] = layer  # a module path, checked when the model runs
            else:
                out[alias] = _one_layer(model, layer, info, f"{what}[{alias!r}]")[1]
        chosen = out
    elif isinstance(layers, (str, nn.Module)):
        chosen = dict([_one_layer(model, layers, info, what)])
    elif isinstance(layers, (list, tuple)):
        chosen = dict(_one_layer(model, layer, info, what) for layer in layers)
    else:
        raise _type_error(what, layers, "aliases, module paths or modules, or {alias: path}")
    if not chosen:
        raise StbiasError(f"{what} is empty; give at least one layer")
    return chosen


def _sampler(stylizer: str | Stylizer | PairSampler, seed: int) -> PairSampler:
    if isinstance(stylizer, PairSampler):
        return stylizer
    if isinstance(stylizer, Stylizer):
        return PairSampler(stylizer, seed=seed)
    if stylizer == "texture":
        return PairSampler(TextureStylizer(seed=seed), seed=seed, name="texture")
    raise StbiasError(
        f"unknown stylizer {stylizer!r}; give 'texture', a stbias.stylization.Stylizer or a "
        "PairSampler (precomputed and AdaIN styles need their files: build them yourself)"
    )


def _header(info: ModelInfo | None, model_name: str) -> dict[str, Any]:
    return {
        "model": model_name,
        "weights": info.weights if info is not None else None,
        "weights_sha256": info.weights_sha256 if info is not None else None,
    }


def _save_header(record: dict[str, Any], header: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(header) - set(SAVE_KEYS))
    if unknown:
        valid = ", ".join(SAVE_KEYS)
        raise StbiasError(f"unknown save() key(s) {', '.join(unknown)}; valid: {valid}")
    record.update(header)
    return record


# header values save() may set (a command-line run takes them from its config)
SAVE_KEYS = ("dataset", "split", "seed", "sampling", "settings", "config", "model")


class ProbeResults(dict):
    """Layer alias -> that layer's entry of ``results.json`` (scores, dims, percent, units, ...).

    Also holds each layer's summed pair statistics, so :meth:`at` re-thresholds without data;
    :meth:`save` writes a run directory that ``stbias.results.load`` and ``task=compare`` read.
    """

    def __init__(
        self,
        stats: Mapping[str, PairStatistics],
        lam: float,
        estimator: str,
        model_name: str,
        num_clips: int,
        *,
        skipped_clips: int = 0,
        clips_run: int | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        self.stats = dict(stats)
        self.lam, self.estimator = float(lam), estimator
        self.model_name, self.num_clips = model_name, int(num_clips)
        self.skipped_clips = int(skipped_clips)
        self.clips_run = self.num_clips if clips_run is None else int(clips_run)
        self.meta = dict(meta or {})
        entries = {a: layer_report(m, lam, estimator) for a, m in self.stats.items()}
        self.unit_scores = {a: e.pop("unit_scores") for a, e in entries.items()}
        super().__init__(entries)

    def at(self, lam: float | None = None, estimator: str | None = None) -> ProbeResults:
        """The same sums scored at another λ or with another layer-wise estimator."""
        return ProbeResults(
            self.stats,
            self.lam if lam is None else lam,
            estimator or self.estimator,
            self.model_name,
            self.num_clips,
            skipped_clips=self.skipped_clips,
            clips_run=self.clips_run,
            meta=self.meta,
        )

    def table(self) -> Any:
        """A pandas DataFrame, one row per layer (the columns of ``results.csv``)."""
        import pandas as pd

        return pd.DataFrame(layer_rows(dict(self), {"model": self.model_name}))

    def plot(self, title: str | None = None) -> Any:
        """Kowal et al. Fig. 3 for these layers (a matplotlib figure)."""
        return fig3({self.model_name: dict(self)}, title=title)

    def record(self) -> dict[str, Any]:
        """The run's ``results.json`` record as ``task=probe`` writes it (before its header)."""
        return {
            "task": "probe",
            "model": self.model_name,
            "weights": self.meta.get("weights"),
            "weights_sha256": self.meta.get("weights_sha256"),
            "dataset": self.meta.get("dataset"),
            "stylization": self.meta.get("stylization"),
            "seed": self.meta.get("seed"),
            "num_clips": self.num_clips,
            "sampling": self.meta.get("sampling"),
            "skipped_clips": self.skipped_clips,
            "metric": self.meta.get("metric", "unitwise"),
            "lam": self.lam,
            "layers": {alias: dict(entry) for alias, entry in self.items()},
        }

    def unit_score_arrays(self) -> dict[str, Any]:
        """``<layer>/<factor>`` -> per-unit scores (the arrays of ``unit_scores.npz``)."""
        return {
            f"{alias}/{factor}": scores
            for alias, entry in self.unit_scores.items()
            for factor, scores in entry.items()
        }

    def save(self, folder: str | os.PathLike, **header: Any) -> str:
        """Write a run directory: ``results.json`` (the one writer of every run), ``results.csv``
        and ``unit_scores.npz``; returns the folder.

        ``header`` sets what a command-line run takes from its config (``dataset``, ``split``,
        ``seed``, ``sampling``, ``settings``, ``config``).
        """
        folder = os.fspath(folder)
        os.makedirs(folder, exist_ok=True)
        record = _save_header(self.record(), header)
        io.write_npz(os.path.join(folder, "unit_scores.npz"), self.unit_score_arrays())
        write_results(folder, record)
        meta = {k: record.get(k) for k in ("model", "dataset", "stylization", "seed")}
        meta.update(weights=record["weights"], weights_sha256=record["weights_sha256"])
        io.write_csv(os.path.join(folder, "results.csv"), layer_rows(record["layers"], meta))
        return folder


class Probe:
    """Static/dynamic scores of a model's layers on clips (Kowal et al.; ``task=probe``).

    Args:
        model: any ``nn.Module`` taking packed clips (one tensor, or ``[slow, fast]``); one made
            by :func:`stbias.models.create` brings its layers, input spec, layout and name.
        layers: which layers: an alias, a module path (``blocks.4``, ``blocks.3[0]``) or a
            module of the model, a list of these, or a mapping alias -> path or module; None:
            the created model's ``probe_layers``.
        input_spec: the model's :class:`~stbias.models.inputs.InputSpec` (or its dict); None:
            the created model's.
        stylizer: ``"texture"`` (weight-free, the default), a ``Stylizer`` or a ``PairSampler``.
        channels: alias -> unit count; found by one forward pass where not given.
        layout: how the layers' outputs are laid out (``cnn``, ``channels_last``, ``tokens``,
            ``tokens_cls``; see ``stbias.models.taps``); None: the created model's, else cnn.
        include_cls: average the class token with the patch tokens.
        lam: unit-wise threshold of the results (``ProbeResults.at`` changes it later).
        estimator: layer-wise estimator (``pooled`` or ``mean_corr``).
        bootstrap: bootstrap replicates for intervals.
        seed: seeds the styles, permutations and bootstrap weights.
        batch_size: clips per forward pass (each gives three views).
        accelerator: Lightning accelerator (``cpu``, ``gpu``, ``auto``).
        model_name: the model's name in tables and figures (None: the created model's).
        progress: show a progress bar.
        state_dir: a folder for the partial and final sums (an interrupted run resumes).
        save_every: steps between two saves of the partial sums (with ``state_dir``).
        state_meta: plain values kept with the final sums (with ``state_dir``).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Any = None,
        input_spec: InputSpec | Mapping[str, Any] | None = None,
        stylizer: str | Stylizer | PairSampler = "texture",
        *,
        channels: Mapping[str, int] | None = None,
        layout: str | None = None,
        include_cls: bool = False,
        lam: float = 0.5,
        estimator: str = "pooled",
        bootstrap: int = 0,
        seed: int = 0,
        batch_size: int = 8,
        accelerator: str = "cpu",
        model_name: str | None = None,
        progress: bool = False,
        state_dir: str | None = None,
        save_every: int = 50,
        state_meta: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise _type_error("model", model, "a torch.nn.Module")
        info = model_info(model)
        self.model, self.info = model, info
        self.layers = resolve_layers(model, layers, info)
        self.spec = _spec(input_spec, info, "Probe")
        if not isinstance(stylizer, (str, Stylizer, PairSampler)):
            raise _type_error("stylizer", stylizer, "'texture', a Stylizer or a PairSampler")
        self.seed = _integer("seed", seed, 0)
        self.sampler = _sampler(stylizer, self.seed)
        declared = dict(info.channels) if info is not None else {}
        channels = _names("channels", {} if channels is None else channels, "{alias: units}")
        for alias, count in channels.items():
            _integer(f"channels[{alias!r}]", count, 1)
        self.channels = {**{a: c for a, c in declared.items() if a in self.layers}, **channels}
        default_layout = info.layout if info is not None else "cnn"
        self.layout = _choice("layout", default_layout if layout is None else layout, LAYOUTS)
        if not isinstance(include_cls, bool):
            raise _type_error("include_cls", include_cls, "True or False")
        self.include_cls = include_cls
        self.lam, self.estimator = _lam(lam), _choice("estimator", estimator, ESTIMATORS)
        self.bootstrap = _integer("bootstrap", bootstrap, 0)
        self.batch_size = _integer("batch_size", batch_size, 1)
        if not isinstance(accelerator, str):
            raise _type_error("accelerator", accelerator, "a Lightning accelerator name")
        if model_name is None:
            model_name = info.name if info is not None else "model"
        if not isinstance(model_name, str):
            raise _type_error("model_name", model_name, "a str")
        self.accelerator, self.model_name, self.progress = accelerator, model_name, bool(progress)
        self.state_dir, self.save_every = state_dir, _integer("save_every", save_every, 1)
        self.state_meta = dict(state_meta or {})

    def module(self) -> Any:
        """The Lightning module one run of this probe tests (``stbias.lit.probe``)."""
        module = build_probe_module(
            self.model,
            self.layers,
            self.spec,
            self.sampler,
            channels=self.channels,
            layout=self.layout,
            model_name=self.model_name,
            include_cls=self.include_cls,
            bootstrap=self.bootstrap,
            seed=self.seed,
            lam=self.lam,
            estimator=self.estimator,
            state_dir=self.state_dir,
            save_every=self.save_every,
            state_meta=self.state_meta,
        )
        self.channels = {a: int(m.num_units) for a, m in module.stats.items()}
        return module

    def run(self, clips: Any, *, trainer: Any = None) -> ProbeResults:
        """Probe on ``clips``: (N, T, H, W, C) uint8 or float in [0, 1] at the model's size, a
        Dataset of stbias samples (``video``, ``index``) or a DataLoader of their batches.

        ``trainer``: a Lightning ``Trainer`` to test with (the command line's: several devices,
        its progress bar); by default one device of ``accelerator``.
        """
        data = clip_data(clips, self.spec, self.batch_size, "Probe.run")
        count = len(data.dataset)
        module = self.module()
        if trainer is None:
            with lightning_quiet():
                trainer = _trainer(self.accelerator, self.progress)
                trainer.test(module, datamodule=data, verbose=False)
        else:
            trainer.test(module, datamodule=data, verbose=False)
        self.last_module, self.last_trainer = module, trainer
        meta = {
            **_header(self.info, self.model_name),
            "stylization": self.sampler.name,
            "seed": self.seed,
        }
        return ProbeResults(
            module.final,
            self.lam,
            self.estimator,
            self.model_name,
            count,
            skipped_clips=module.skipped_clips,
            clips_run=module.clips_run,
            meta=meta,
        )


def clip_rows_info(dataset: Any) -> dict[int, dict[str, Any]]:
    """Base-dataset index -> ``{"id", "label"}`` of every clip of ``dataset`` (or a Subset)."""
    if isinstance(dataset, Subset):
        indices = [int(i) for i in dataset.indices]
    else:
        indices = list(range(len(dataset)))
    return {i: clip_info(dataset, k) for k, i in enumerate(indices)}


class ExplanationResults:
    """What an explanation method gives: per-clip rows, a summary and the per-clip arrays.

    Attributes:
        record: the run's ``results.json`` record (``task``, the model, ``settings``,
            ``summary``, ``clips``: one row per clip, ...), before the header of a run.
        arrays: name -> the npz files' arrays (``masks.npz``; ``gradcam.npz`` and ``blobs.npz``).
        dataset: the clips' dataset (for figures of single clips).
        figures: the figure files the last :meth:`save` wrote.
    """

    # the summary figure's file name (without suffix) in a run directory
    figure_name = "summary"

    def __init__(
        self, record: dict[str, Any], arrays: Mapping[str, Mapping[str, Any]], dataset: Any
    ) -> None:
        self.record = record
        self.arrays = {k: dict(v) for k, v in arrays.items()}
        self.dataset = dataset
        self.figures: list[str] = []

    def table(self) -> Any:
        """A pandas DataFrame, one row per clip (the columns of ``results.csv``)."""
        import pandas as pd

        return pd.DataFrame(self.record["clips"])

    def label(self) -> str:
        """How figures name the run: ``model (dataset, random weights)``."""
        dataset = self.record.get("dataset") or "clips"
        return f"{self.record['model']} ({dataset}{random_note(self.record)})"

    def plot(self, title: str | None = None) -> Any:
        """The run's summary (mean ± std (n) of every per-clip number) as a table figure."""
        summary = self.record["summary"]
        columns = [(k, k) for k, v in summary.items() if isinstance(v, Mapping) and "mean" in v]
        method = self.record.get("method", self.record["task"])
        return draw_table(*table_rows({self.label(): summary}, columns), title=title or method)

    def clip_figures(self, folder: str, count: int, **options: Any) -> list[str]:
        """Figures of the first ``count`` clips (none by default); returns the files."""
        return []

    def save(self, folder: str | os.PathLike, *, figures: int = 0, **header: Any) -> str:
        """Write a run directory: ``results.json`` (the one writer of every run), ``results.csv``
        (one row per clip), the arrays (``<name>.npz``), the summary figure and figures of the
        first ``figures`` clips; returns the folder (the figure files: :attr:`figures`).

        ``header`` sets what a command-line run takes from its config (``dataset``, ``split``,
        ``seed``, ``config``).
        """
        options = {k: header.pop(k) for k in list(header) if k in self.figure_options}
        folder = os.fspath(folder)
        os.makedirs(folder, exist_ok=True)
        _save_header(self.record, header)
        for name, arrays in self.arrays.items():
            io.write_npz(os.path.join(folder, f"{name}.npz"), arrays)
        io.write_csv(os.path.join(folder, "results.csv"), self.record["clips"] or [{"index": None}])
        self.write_files(folder)
        write_results(folder, self.record)
        paths = save_figure(self.plot(), os.path.join(folder, self.figure_name))
        self.figures = paths + self.clip_figures(folder, int(figures), **options)
        return folder

    # save() keywords that go to clip_figures
    figure_options: tuple[str, ...] = ()

    def write_files(self, folder: str) -> None:
        """Further data files of the run directory (none by default)."""


class GradCAMResults(ExplanationResults):
    """Grad-CAM maps of one layer and their blob statistics (Mänttäri et al.'s Table 3)."""

    figure_name = "table3"
    figure_options = ("fps",)

    def plot(self, title: str | None = None) -> Any:
        """The run in Table 3's layout (blob count, size, centre distance)."""
        kwargs = {} if title is None else {"title": title}
        return table3({self.label(): self.record["summary"]}, **kwargs)

    def write_files(self, folder: str) -> None:
        """``blobs.csv``: one row per blob."""
        b = self.arrays["blobs"]
        rows = [
            {
                "index": int(b["clip"][i]),
                "frame": int(b["frame"][i]),
                "x": float(b["xy"][i, 0]),
                "y": float(b["xy"][i, 1]),
                "size": float(b["size"][i]),
                "distance": float(b["distance"][i]),
            }
            for i in range(len(b["clip"]))
        ]
        empty = {"index": None, "frame": None, "x": None, "y": None, "size": None, "distance": None}
        io.write_csv(os.path.join(folder, "blobs.csv"), rows or [empty])

    def clip_figures(self, folder: str, count: int, fps: float = 4.0) -> list[str]:
        """Frames over their maps (PNG, PDF) and an animation (GIF) of the first clips."""
        clips, record, paths = self.arrays["gradcam"], self.record, []
        if "maps" not in clips:
            return paths
        for k in range(min(count, len(clips["index"]))):
            index = int(clips["index"][k])
            frames = video_to_float(torch.as_tensor(_clip(self.dataset, index))[None])
            frames = frames[0].permute(1, 2, 3, 0).numpy()  # (T, H, W, C)
            maps = clips["maps"][k].astype("float32")
            row = record["clips"][k]
            title = (
                f"{self.label()}, layer {record['layer']}, clip {index}: class {row['target']} "
                f"(predicted {row['predicted']}), {row['blob_count_mean']:.1f} blobs per frame"
            )
            paths += save_figure(
                gradcam_strip(frames, maps, title), os.path.join(folder, f"gradcam_{index}")
            )
            gif = os.path.join(folder, f"gradcam_{index}.gif")
            paths.append(save_animation(overlay(frames, maps), gif, float(fps)))
        return paths


class TemporalMaskResults(ExplanationResults):
    """Temporal masks of every clip and their summary (Mänttäri et al.'s Table 4)."""

    figure_name = "table4"

    def plot(self, title: str | None = None) -> Any:
        """The run in Table 4's layout (mask length, drop ratio, drop difference)."""
        kwargs = {} if title is None else {"title": title}
        return table4({self.label(): self.record["summary"]}, **kwargs)

    def clip_figures(self, folder: str, count: int) -> list[str]:
        """Frame strips with the frozen frames and the mask under them, of the first clips."""
        clips, record, paths = self.arrays["masks"], self.record, []
        for k in range(min(count, len(clips["index"]))):
            index = int(clips["index"][k])
            frames01 = video_to_float(torch.as_tensor(_clip(self.dataset, index))[None])
            frozen = freeze(frames01, torch.as_tensor(clips["mask"][k])[None].float())
            row = record["clips"][k]
            title = (
                f"{self.label()}, clip {index}: class {row['target']}, OS {row['os']:.3f}, "
                f"FS {row['fs']:.3f}, RS {row['rs']:.3f}, mask length {row['length']}"
            )
            figure = mask_strip(
                frames01[0].permute(1, 2, 3, 0).numpy(),
                clips["mask"][k],
                perturbed=frozen[0].permute(1, 2, 3, 0).numpy(),
                title=title,
                threshold=record["settings"]["length_threshold"],
            )
            paths += save_figure(figure, os.path.join(folder, f"mask_{index}"))
        return paths


def _clip(dataset: Any, index: int) -> Any:
    """The video of the clip whose base-dataset index is ``index``."""
    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    return base[int(index)]["video"]


class Explanation:
    """The shape every explanation method shares (and a new one subclasses).

    ``Method(model, layer, input_spec, **settings).run(clips)``: the model (one made by
    :func:`stbias.models.create` brings its input spec, layers and name), a layer where the
    method explains one, and the method's settings, apart from the call; :meth:`run` takes the
    clips a :class:`Probe` takes (:data:`CLIPS`) and returns :class:`ExplanationResults`.

    A new method subclasses it with ``outputs`` (the names of its per-clip arrays) and
    :meth:`explain_batch`; the generic test loop
    (:class:`~stbias.lit.explain.BatchExplainModule`) runs it and :meth:`results` summarises
    every scalar output (mean, std, n, interval). ``python run.py metric=<name>`` runs it with
    ``conf/metric/<name>.yaml`` naming the class under ``method._target_`` (``task=explain``).
    Grad-CAM and the temporal masks bring their own test loops (:meth:`module`, :meth:`results`).
    """

    task = "explain"
    needs_layer = False
    # the per-clip arrays explain_batch returns (a method of the generic kind)
    outputs: tuple[str, ...] = ()

    def __init__(
        self,
        model: nn.Module,
        layer: Any = None,
        input_spec: InputSpec | Mapping[str, Any] | None = None,
        *,
        target_class: str = "predicted",
        label_key: str = "label",
        batch_size: int = 8,
        accelerator: str = "cpu",
        model_name: str | None = None,
        progress: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise _type_error("model", model, "a torch.nn.Module")
        info = model_info(model)
        self.model, self.info = model, info
        name = type(self).__name__
        self.spec = _spec(input_spec, info, name)
        if layer is None and self.needs_layer:
            layer = self.default_layer()
        self.layer, self.layer_path = (
            _one_layer(model, layer, info, "layer") if layer is not None else (None, None)
        )
        self.target_class = _choice("target_class", target_class, TARGET_CLASSES)
        if not isinstance(label_key, str):
            raise _type_error("label_key", label_key, "a sample key (str)")
        self.label_key = label_key
        self.batch_size = _integer("batch_size", batch_size, 1)
        if not isinstance(accelerator, str):
            raise _type_error("accelerator", accelerator, "a Lightning accelerator name")
        if model_name is None:
            model_name = info.name if info is not None else "model"
        if not isinstance(model_name, str):
            raise _type_error("model_name", model_name, "a str")
        self.accelerator, self.model_name, self.progress = accelerator, model_name, bool(progress)
        self.layout = info.layout if info is not None else "cnn"

    def default_layer(self) -> str:
        """The layer a method that needs one explains when none is given."""
        info = self.info
        if info is not None and info.gradcam_layer:
            return info.gradcam_layer
        declared = ", ".join(info.layers) if info is not None else ""
        raise StbiasError(
            f"{type(self).__name__} needs a layer: layer=<alias, module path or module>"
            + (f"; layers of {info.name}: {declared}" if declared else "")
        )

    def pack(self) -> Any:
        """Float clips ``(B, C, T, H, W)`` in [0, 1] -> the model's input."""
        return packer(self.spec)

    def explain_batch(
        self, clips: torch.Tensor, target: torch.Tensor | None, labels: torch.Tensor | None
    ) -> Mapping[str, torch.Tensor]:
        """Per-clip arrays ``{name: (B, ...)}`` (the names :attr:`outputs`) of float clips
        ``(B, C, T, H, W)`` in [0, 1]; ``target``: the classes to explain (None: predicted)."""
        raise NotImplementedError(f"{type(self).__name__} implements no explain_batch")

    def settings(self) -> dict[str, Any]:
        """The method's settings as plain values (``results.json``'s ``settings``)."""
        return {}

    def module(self) -> pl.LightningModule:
        """The Lightning module whose test loop explains the clips."""
        return BatchExplainModule(
            self.explain_batch,
            self.model,
            self.outputs,
            label_key=self.label_key,
            target_class=self.target_class,
            what=type(self).__name__,
        )

    def results(self, module: Any, dataset: Any) -> ExplanationResults:
        """Rows (index, id, label and every output: a number, or its values joined by spaces)
        and a summary of every scalar output (mean, std, n, 95 % interval)."""
        clips = module.results["clips"]
        infos = clip_rows_info(dataset)
        rows, summary = [], {}
        for key in self.outputs:
            if clips[key].ndim == 1:
                summary[key] = summarize(clips[key])
        for k, index in enumerate(clips["index"]):
            label = int(clips["labels"][k])
            row = {
                "index": int(index),
                "id": infos[int(index)].get("id"),
                "label": label if label >= 0 else None,
            }
            for key in self.outputs:
                value = clips[key][k]
                row[key] = (
                    float(value)
                    if value.ndim == 0
                    else " ".join(f"{v:.4g}" for v in value.ravel().tolist())
                )
            rows.append(row)
        record = {
            **self.header(module, len(clips["index"])),
            "method": type(self).__name__,
            "layer": self.layer,
            "layer_path": self.layer_path,
            "settings": self.settings(),
            "summary": summary,
            "clips": rows,
        }
        name = type(self).__name__.lower()
        return ExplanationResults(record, {name: dict(clips)}, dataset)

    def header(self, module: Any, count: int) -> dict[str, Any]:
        """The record's first keys: task, model, weights, clips."""
        return {
            "task": self.task,
            **_header(self.info, self.model_name),
            "dataset": None,
            "split": None,
            "seed": None,
            "num_clips": int(count),
            "skipped_clips": int(module.skipped_clips),
            "target_class": self.target_class,
            "label_key": self.label_key,
        }

    def run(
        self, clips: Any, labels: Any = None, *, trainer: Any = None
    ) -> ExplanationResults | None:
        """Explain ``clips`` (see :data:`CLIPS`; ``labels`` for a tensor of clips where
        ``target_class="label"``). ``trainer``: a Lightning ``Trainer`` built with
        ``inference_mode=False`` (the command line's); by default one device of
        ``accelerator``. Returns None on the non-zero ranks of a multi-process run.
        """
        data = clip_data(clips, self.spec, self.batch_size, f"{type(self).__name__}.run", labels)
        module = self.module()
        if trainer is None:
            with lightning_quiet():
                trainer = _trainer(self.accelerator, self.progress, inference_mode=False)
                trainer.test(module, datamodule=data, verbose=False)
        else:
            trainer.test(module, datamodule=data, verbose=False)
        self.last_module, self.last_trainer = module, trainer
        if not trainer.is_global_zero:
            return None
        return self.results(module, data.dataset)


class GradCAM(Explanation):
    """Grad-CAM per time step of one layer, and the blobs of its maps (``metric=gradcam``).

    Args:
        model, layer, input_spec: see :class:`Explanation`; ``layer`` None: the created
            model's ``gradcam_layer``.
        weights, target, time, normalize, grid, token_order, eps: see
            :class:`stbias.metrics.gradcam.GradCAM`.
        blob_params: blob detector settings (OpenCV ``SimpleBlobDetector``).
        keep_maps: keep the upsampled maps (float16) for ``gradcam.npz`` and the figures.
        target_class, label_key, batch_size, accelerator, model_name, progress: as
            :class:`Explanation`.
    """

    task = "gradcam"
    needs_layer = True

    def __init__(
        self,
        model: nn.Module,
        layer: Any = None,
        input_spec: InputSpec | Mapping[str, Any] | None = None,
        *,
        weights: str = "time",
        target: str = "logit",
        time: str = "interpolate",
        normalize: str = "frame",
        grid: Any = None,
        token_order: str | None = None,
        eps: float = GRADCAM_EPS,
        blob_params: Mapping[str, Any] | None = None,
        keep_maps: bool = True,
        **common: Any,
    ) -> None:
        super().__init__(model, layer, input_spec, **common)
        info_order = (self.info.config.get("token_order") if self.info else None) or "thw"
        self.explainer = GradCAMExplainer(
            self.model,
            self.layer_path,
            pack=self.pack(),
            layout=self.layout,
            weights=weights,
            target=target,
            time=time,
            normalize=normalize,
            grid=grid,
            token_order=token_order or info_order,
            eps=eps,
            model_name=self.model_name,
        )
        self.blob_params = dict(blob_params or {})
        self.keep_maps = bool(keep_maps)

    def module(self) -> pl.LightningModule:
        return GradCAMModule(
            self.explainer,
            label_key=self.label_key,
            target_class=self.target_class,
            blob_params=self.blob_params,
            keep_maps=self.keep_maps,
        )

    def results(self, module: Any, dataset: Any) -> GradCAMResults:
        clips, blobs = module.results["clips"], module.results["blobs"]
        infos = clip_rows_info(dataset)
        labelled = clips["labels"] >= 0
        counts = blobs["counts"]
        record = {
            **self.header(module, len(clips["index"])),
            "layer": self.layer,
            "layer_path": self.layer_path,
            "layer_shape": list(clips["raw"].shape[1:]),
            "map_shape": list(clips["maps"].shape[1:]) if "maps" in clips else None,
            "accuracy": float((clips["predicted"] == clips["labels"])[labelled].mean())
            if labelled.any()
            else None,
            "settings": self.explainer.settings(),
            "blob_params": blobs["params"],
            "summary": blobs["summary"],
            "clips": [
                {
                    "index": int(index),
                    "id": infos[int(index)].get("id"),
                    "label": int(clips["labels"][k]) if clips["labels"][k] >= 0 else None,
                    "target": int(clips["target"][k]),
                    "predicted": int(clips["predicted"][k]),
                    "score": float(clips["score"][k]),
                    "probability": float(clips["probability"][k]),
                    "blob_count_mean": float(counts[k].mean()),
                    "blob_counts": " ".join(str(int(c)) for c in counts[k]),
                }
                for k, index in enumerate(clips["index"])
            ],
        }
        b = blobs["blobs"]
        arrays = {
            "gradcam": dict(clips),
            "blobs": {"index": blobs["index"], "counts": blobs["counts"], **b},
        }
        return GradCAMResults(record, arrays, dataset)


class TemporalMask(Explanation):
    """Mänttäri et al.'s temporal masks: the frames a classification needs
    (``metric=temporal_mask``). Explains the whole model (no layer).

    Args:
        model, input_spec: see :class:`Explanation` (``layer`` stays None: no layer).
        settings: the search settings of :class:`stbias.metrics.masks.TemporalMask`
            (``iterations``, ``lr``, ``l1``, ``tv``, ``perturbation``, ...).
        target_class, label_key, batch_size, accelerator, model_name, progress: as
            :class:`Explanation`.
    """

    task = "temporal_mask"

    def __init__(
        self,
        model: nn.Module,
        layer: Any = None,
        input_spec: InputSpec | Mapping[str, Any] | None = None,
        *,
        target_class: str = "predicted",
        label_key: str = "label",
        batch_size: int = 8,
        accelerator: str = "cpu",
        model_name: str | None = None,
        progress: bool = False,
        **settings: Any,
    ) -> None:
        if layer is not None:
            raise StbiasError(
                f"TemporalMask explains the whole model, not a layer; got layer={layer!r}"
            )
        super().__init__(
            model,
            None,
            input_spec,
            target_class=target_class,
            label_key=label_key,
            batch_size=batch_size,
            accelerator=accelerator,
            model_name=model_name,
            progress=progress,
        )
        unknown = sorted(set(settings) - set(SEARCH_SETTINGS))
        if unknown:
            raise StbiasError(
                f"unknown TemporalMask setting(s) {', '.join(unknown)}; valid: "
                f"{', '.join(SEARCH_SETTINGS)}"
            )
        self.explainer = MaskExplainer(self.model, pack=self.pack(), **settings)

    def module(self) -> pl.LightningModule:
        return TemporalMaskModule(
            self.explainer, label_key=self.label_key, target_class=self.target_class
        )

    def results(self, module: Any, dataset: Any) -> TemporalMaskResults:
        results = module.results
        clips = results["clips"]
        infos = clip_rows_info(dataset)
        rows = []
        for k, index in enumerate(clips["index"]):
            label = int(clips["labels"][k])
            kept = bool(clips["drop_ratio_kept"][k])
            correct = label < 0 or int(clips["predicted"][k]) == label
            rows.append(
                {
                    "index": int(index),
                    "id": infos[int(index)].get("id"),
                    "label": label if label >= 0 else None,
                    "target": int(clips["target"][k]),
                    "predicted": int(clips["predicted"][k]),
                    "os": float(clips["os"][k]),
                    "fs": float(clips["fs"][k]),
                    "rs": float(clips["rs"][k]),
                    # the paper's CS: the ground-truth class's score where the prediction is wrong
                    "cs": None if correct else float(clips["label_score"][k]),
                    "length": int(clips["length"][k]),
                    "initial_length": int(clips["initial_length"][k]),
                    "drop_ratio": float(clips["drop_ratio"][k]) if kept else None,
                    "drop_ratio_kept": kept,
                    "drop_difference": float(clips["drop_difference"][k]),
                    "loss": float(clips["loss"][k]),
                    "mask": " ".join(f"{v:.3f}" for v in clips["mask"][k]),
                }
            )
        record = {
            **self.header(module, len(clips["index"])),
            "frames": int(clips["mask"].shape[1]),
            "settings": self.explainer.settings(),
            "summary": results["summary"],
            "clips": rows,
        }
        return TemporalMaskResults(record, {"masks": dict(clips)}, dataset)


class WeightTemporality:
    """ASDT and self-convolution for every temporal convolution of a model.

    Example::

        WeightTemporality(model, delta=0.0).run()  # {module path: {"asdt": ..., ...}}
    """

    def __init__(
        self,
        model: nn.Module,
        delta: float = 0.0,
        rule: str = "spec",
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model takes a torch.nn.Module; got {type(model).__name__}")
        if isinstance(delta, bool) or not isinstance(delta, (int, float)):
            raise TypeError(f"delta takes a number; got {type(delta).__name__} {delta!r:.80}")
        if not math.isfinite(delta):
            raise StbiasError(f"delta={delta} is not valid; delta takes a finite number")
        check_rule(rule)
        self.model = model
        self.delta = float(delta)
        self.rule = rule
        self.aliases = dict(aliases or {})

    def layers(self) -> list[TemporalConv]:
        """The convolutions that are measured."""
        return temporal_convs(self.model)

    def run(self) -> WeightResults:
        """Measure every temporal convolution; see :func:`weight_temporality`."""
        return WeightResults(weight_temporality(self.model, self.delta, self.rule, self.aliases))


class WeightResults(dict):
    """Layer name -> its ASDT and self-convolution numbers, with ``table()`` and ``plot()``."""

    def table(self) -> Any:
        """A pandas DataFrame, one row per temporal convolution."""
        import pandas as pd

        rows = []
        for name, values in self.items():
            row = {"layer": name, **values}
            row["kernel"] = "x".join(str(k) for k in values.get("kernel", ()))
            rows.append(row)
        return pd.DataFrame(rows)

    def plot(self, kind: str = "asdt", label: str = "model", title: str | None = None) -> Any:
        """Byvshev et al. Fig. 3 (``asdt``, ``asdt_scaled``) or Fig. 4 (``temporal_channels``)."""
        if kind == "temporal_channels":
            return plot_temporal_channels({label: dict(self)}, title=title)
        if kind in ("asdt", "asdt_scaled"):
            return plot_asdt({label: dict(self)}, scaled=kind == "asdt_scaled", title=title)
        raise StbiasError(f"unknown plot {kind!r}; valid: asdt, asdt_scaled, temporal_channels")
