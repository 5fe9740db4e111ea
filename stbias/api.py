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
on one device), so both give the same numbers on the same clips. ``WeightTemporality`` is the
weight-only twin (``stbias.metrics.weights``), whose results also have ``table()`` and ``plot()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from stbias.errors import StbiasError
from stbias.lit.probe import EvalData, ProbeModule
from stbias.metrics import PairStatistics
from stbias.metrics.weights import WeightTemporality
from stbias.models.inputs import InputSpec
from stbias.stylization import PairSampler, Stylizer, TextureStylizer

__all__ = ["Probe", "ProbeResults", "WeightTemporality"]


class ClipTensorDataset(Dataset):
    """Samples ``{"video", "index"}`` over a uint8 ``(N, T, H, W, C)`` tensor of clips."""

    def __init__(self, clips: torch.Tensor) -> None:
        if not torch.is_tensor(clips) or clips.ndim != 5 or clips.dtype != torch.uint8:
            shape = tuple(clips.shape) if torch.is_tensor(clips) else type(clips).__name__
            raise StbiasError(
                f"Probe.run takes uint8 clips (N, T, H, W, C), a Dataset or a DataLoader; got "
                f"{shape}" + (f" of dtype {clips.dtype}" if torch.is_tensor(clips) else "")
            )
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

        from stbias.tasks.probe import layer_rows

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
        if not layers:
            raise StbiasError("Probe needs layers: {alias: module.path}")
        self.model = model
        self.layers = {str(k): str(v) for k, v in layers.items()}
        self.spec = (
            input_spec
            if isinstance(input_spec, InputSpec)
            else InputSpec.from_dict(dict(input_spec))
        )
        self.sampler = _sampler(stylizer, seed)
        self.channels = dict(channels or {})
        self.layout, self.include_cls = layout, bool(include_cls)
        self.lam, self.estimator = float(lam), str(estimator)
        self.bootstrap, self.seed = int(bootstrap), int(seed)
        self.batch_size, self.accelerator = int(batch_size), str(accelerator)
        self.model_name, self.progress = str(model_name), bool(progress)

    def _channels(self) -> dict[str, int]:
        missing = {a: p for a, p in self.layers.items() if a not in self.channels}
        if missing:
            from stbias.tasks.probe import infer_channels

            self.channels.update(
                infer_channels(self.model, missing, self.spec, self.layout, self.model_name)
            )
        return self.channels

    def run(self, clips: torch.Tensor | Dataset | DataLoader) -> ProbeResults:
        """Probe on ``clips``: uint8 ``(N, T, H, W, C)`` at the model's size, a Dataset of
        stbias samples (``video``, ``index``) or a DataLoader of their batches."""
        import pytorch_lightning as pl

        if isinstance(clips, DataLoader):
            data, count = _LoaderData(clips), len(clips.dataset)
        else:
            dataset = ClipTensorDataset(clips) if torch.is_tensor(clips) else clips
            data, count = EvalData(dataset, self.batch_size), len(dataset)
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
