"""The Python API: construction apart from the call, as in Captum.

```python
from stbias import Probe
probe = Probe(model, layers={"res4": "blocks.4"}, input_spec=spec, stylizer="texture")
res = probe.run(clips)     # uint8 (N, T, H, W, C) tensor, a Dataset or a DataLoader
res.table()                # pandas DataFrame, one row per layer
res.plot()                 # the Fig. 3 figure
res.at(lam=0.3)            # the same sums re-thresholded
```

``Probe.run`` runs the very ``ProbeModule`` that ``python run.py`` runs (one Lightning test loop
on one device), so both give the same numbers on the same clips. Arguments are checked where
they are given: a wrong type raises ``TypeError``, a wrong value (clips that do not match the
input spec, a λ outside (-1, 1), an unknown layout) ``ValueError``, each naming the argument and
what it takes. ``WeightTemporality`` is the
weight-only twin (``stbias.metrics.weights``), whose results also have ``table()`` and ``plot()``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from stbias.errors import StbiasError
from stbias.lit.probe import EvalData, ProbeModule
from stbias.metrics import PairStatistics
from stbias.metrics.pairs import ESTIMATORS
from stbias.metrics.weights import TemporalConv, check_rule, temporal_convs, weight_temporality
from stbias.models.inputs import InputSpec
from stbias.models.taps import LAYOUTS, infer_channels
from stbias.plotting.weights import plot_asdt, plot_temporal_channels
from stbias.results import layer_rows
from stbias.stylization import PairSampler, Stylizer, TextureStylizer

__all__ = ["Probe", "ProbeResults", "WeightTemporality"]


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


class ClipTensorDataset(Dataset):
    """Samples ``{"video", "index"}`` over a uint8 ``(N, T, H, W, C)`` tensor of clips."""

    def __init__(self, clips: torch.Tensor) -> None:
        if not torch.is_tensor(clips) or clips.ndim != 5 or clips.dtype != torch.uint8:
            shape = tuple(clips.shape) if torch.is_tensor(clips) else type(clips).__name__
            raise StbiasError(
                f"Probe.run takes uint8 clips (N, T, H, W, C), a Dataset or a DataLoader; got "
                f"{shape}" + (f" of dtype {clips.dtype}" if torch.is_tensor(clips) else "")
            )
        if clips.shape[0] == 0:
            raise StbiasError("Probe.run got no clips (N = 0)")
        self.clips = clips

    def __len__(self) -> int:
        return int(self.clips.shape[0])

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"video": self.clips[index], "index": int(index)}


class _LoaderData(EvalData):
    """A DataLoader the user built, handed to the test loop as it is."""

    def __init__(self, loader: DataLoader) -> None:
        super().__init__(loader.dataset, loader.batch_size or 1)
        self.loader = loader

    def test_dataloader(self) -> DataLoader:
        return self.loader


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


class ProbeResults(dict):
    """Layer alias -> that layer's entry of ``results.json`` (scores, dims, percent, units, ...).

    Also holds each layer's summed pair statistics, so :meth:`at` re-thresholds without data.
    """

    def __init__(
        self,
        stats: Mapping[str, PairStatistics],
        lam: float,
        estimator: str,
        model_name: str,
        num_clips: int,
    ) -> None:
        self.stats = dict(stats)
        self.lam, self.estimator = float(lam), estimator
        self.model_name, self.num_clips = model_name, int(num_clips)
        entries = {a: m.report(lam=lam, estimator=estimator) for a, m in self.stats.items()}
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
        )

    def table(self) -> Any:
        """A pandas DataFrame, one row per layer (the columns of ``results.csv``)."""
        import pandas as pd

        return pd.DataFrame(layer_rows(dict(self), {"model": self.model_name}))

    def plot(self, title: str | None = None) -> Any:
        """Kowal et al. Fig. 3 for these layers (a matplotlib figure)."""
        from stbias.plotting.pairs import fig3

        return fig3({self.model_name: dict(self)}, title=title)


class Probe:
    """Static/dynamic scores of a model's layers on clips (Kowal et al.; ``task=probe``).

    Args:
        model: any ``nn.Module`` taking packed clips (one tensor, or ``[slow, fast]``).
        layers: alias -> module path (``blocks.4``, ``layer3``, ``blocks.3[0]``).
        input_spec: the model's :class:`~stbias.models.inputs.InputSpec` (or its dict).
        stylizer: ``"texture"`` (weight-free, the default), a ``Stylizer`` or a ``PairSampler``.
        channels: alias -> unit count; found by one forward pass where not given.
        layout: how the layers' outputs are laid out (``cnn``, ``channels_last``, ``tokens``,
            ``tokens_cls``; see ``stbias.models.taps``).
        include_cls: average the class token with the patch tokens.
        lam: unit-wise threshold of the results (``ProbeResults.at`` changes it later).
        estimator: layer-wise estimator (``pooled`` or ``mean_corr``).
        bootstrap: bootstrap replicates for intervals.
        seed: seeds the styles, permutations and bootstrap weights.
        batch_size: clips per forward pass (each gives three views).
        accelerator: Lightning accelerator (``cpu``, ``gpu``, ``auto``).
        model_name: the model's name in tables and figures.
        progress: show a progress bar.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Mapping[str, str],
        input_spec: InputSpec | Mapping[str, Any],
        stylizer: str | Stylizer | PairSampler = "texture",
        *,
        channels: Mapping[str, int] | None = None,
        layout: str = "cnn",
        include_cls: bool = False,
        lam: float = 0.5,
        estimator: str = "pooled",
        bootstrap: int = 0,
        seed: int = 0,
        batch_size: int = 8,
        accelerator: str = "cpu",
        model_name: str = "model",
        progress: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise _type_error("model", model, "a torch.nn.Module")
        layers = _names("layers", layers, "{alias: module.path}")
        if not layers or not all(isinstance(v, str) for v in layers.values()):
            raise StbiasError(
                f"layers={layers!r} is not valid; Probe needs layers: {{alias: module.path}}, "
                "e.g. {'res4': 'blocks.4'} ('' is the model itself)"
            )
        self.model = model
        self.layers = dict(layers)
        if isinstance(input_spec, InputSpec):
            self.spec = input_spec
        elif isinstance(input_spec, Mapping):
            try:
                self.spec = InputSpec.from_dict(dict(input_spec))
            except StbiasError:
                raise
            except (TypeError, ValueError) as err:
                raise StbiasError(
                    f"input_spec {dict(input_spec)!r} is not valid ({err}); see "
                    "stbias.models.inputs.InputSpec for its fields"
                ) from None
        else:
            raise _type_error("input_spec", input_spec, "an InputSpec or a mapping of its fields")
        if not isinstance(stylizer, (str, Stylizer, PairSampler)):
            raise _type_error("stylizer", stylizer, "'texture', a Stylizer or a PairSampler")
        self.seed = _integer("seed", seed, 0)
        self.sampler = _sampler(stylizer, self.seed)
        channels = _names("channels", {} if channels is None else channels, "{alias: units}")
        for alias, count in channels.items():
            _integer(f"channels[{alias!r}]", count, 1)
        self.channels = channels
        self.layout = _choice("layout", layout, LAYOUTS)
        if not isinstance(include_cls, bool):
            raise _type_error("include_cls", include_cls, "True or False")
        self.include_cls = include_cls
        self.lam, self.estimator = _lam(lam), _choice("estimator", estimator, ESTIMATORS)
        self.bootstrap = _integer("bootstrap", bootstrap, 0)
        self.batch_size = _integer("batch_size", batch_size, 1)
        if not isinstance(accelerator, str):
            raise _type_error("accelerator", accelerator, "a Lightning accelerator name")
        if not isinstance(model_name, str):
            raise _type_error("model_name", model_name, "a str")
        self.accelerator, self.model_name, self.progress = accelerator, model_name, bool(progress)

    def _channels(self) -> dict[str, int]:
        missing = {a: p for a, p in self.layers.items() if a not in self.channels}
        if missing:
            self.channels.update(
                infer_channels(self.model, missing, self.spec, self.layout, self.model_name)
            )
        return self.channels

    def _check_dataset(self, dataset: Any) -> None:
        """Refuse an empty dataset, or one whose first sample is not a clip at the spec."""
        try:
            size = len(dataset)
        except TypeError:
            return  # an iterable dataset: its samples are checked as they come
        if size == 0:
            raise StbiasError("Probe.run got an empty dataset")
        sample = dataset[0]
        if not isinstance(sample, Mapping) or "video" not in sample:
            raise _type_error(
                "a Dataset sample", sample, "a dict with 'video' (uint8 T, H, W, C) and 'index'"
            )
        video = sample["video"]
        if not torch.is_tensor(video) or video.ndim != 4 or video.dtype != torch.uint8:
            shape = tuple(video.shape) if hasattr(video, "shape") else type(video).__name__
            raise StbiasError(
                f"a Dataset sample's 'video' is {shape}; Probe.run takes uint8 (T, H, W, C) clips"
            )
        check_clip_shape(tuple(video.shape), self.spec, "the dataset's clips")

    def run(self, clips: torch.Tensor | Dataset | DataLoader) -> ProbeResults:
        """Probe on ``clips``: uint8 ``(N, T, H, W, C)`` at the model's size, a Dataset of
        stbias samples (``video``, ``index``) or a DataLoader of their batches."""
        import pytorch_lightning as pl

        if isinstance(clips, DataLoader):
            data, count = _LoaderData(clips), len(clips.dataset)
            self._check_dataset(clips.dataset)
        elif torch.is_tensor(clips):
            dataset = ClipTensorDataset(clips)
            check_clip_shape(tuple(clips.shape), self.spec, "the clips")
            data, count = EvalData(dataset, self.batch_size), len(dataset)
        elif isinstance(clips, Dataset):
            self._check_dataset(clips)
            data, count = EvalData(clips, self.batch_size), len(clips)
        else:
            raise _type_error(
                "Probe.run",
                clips,
                "uint8 clips (N, T, H, W, C) as a tensor, a Dataset or a DataLoader",
            )
        module = ProbeModule(
            self.model,
            self.layers,
            self._channels(),
            self.spec,
            self.sampler,
            layout=self.layout,
            include_cls=self.include_cls,
            bootstrap=self.bootstrap,
            seed=self.seed,
            lam=self.lam,
            estimator=self.estimator,
            model_name=self.model_name,
        )
        from stbias.reporting import lightning_quiet

        with lightning_quiet():
            trainer = pl.Trainer(
                accelerator=self.accelerator,
                devices=1,
                logger=False,
                enable_checkpointing=False,
                enable_model_summary=False,
                enable_progress_bar=self.progress,
                use_distributed_sampler=False,
            )
            trainer.test(module, datamodule=data, verbose=False)
        stats = {alias: metric for alias, metric in module.stats.items()}
        return ProbeResults(stats, self.lam, self.estimator, self.model_name, count)


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
