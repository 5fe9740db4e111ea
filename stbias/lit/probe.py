"""The probe: a frozen model, three views per clip, one pair-statistics metric per layer.

Each test step turns a batch of clips into the views of one static and one dynamic pair per clip
(``anchor``, ``static`` = shuffled anchor, ``dynamic`` = anchor restyled), runs ONE forward pass
over all views stacked along the batch axis, pools every tapped layer to ``(B, C)`` and adds the
pairs to that layer's :class:`~stbias.metrics.PairStatistics`. The metrics sum across processes,
so ``Trainer(devices=N, strategy="ddp")`` gives the numbers of one process.

Every ``save_every`` steps each process writes its partial sums and how many of its clips they
cover to ``<state_dir>/partial-rank<r>-of<w>.pt``; a later run with the same ``state_dir`` starts
from there. At the end the summed sums of every layer go to ``<state_dir>/<alias>.pt``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from stbias.data import video_to_float
from stbias.data.loading import loader_kwargs, resolve_workers
from stbias.errors import StbiasError
from stbias.io import WriteError, load_tensors, torch_save
from stbias.metrics import PairStatistics
from stbias.models.inputs import InputSpec, pack_inputs, spec_shapes
from stbias.models.taps import LayerTap, infer_channels, pool_outputs
from stbias.stylization.pairs import shuffled_views, split_views, stack_views, view_names
from stbias.validation import require_finite

log = logging.getLogger(__name__)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """A 5-D clip batch in the channels-last memory layout (values unchanged)."""
    return x.contiguous(memory_format=torch.channels_last_3d) if x.ndim == 5 else x


def layer_state_path(state_dir: str, alias: str) -> str:
    """Where the final sums of layer ``alias`` are kept."""
    return os.path.join(state_dir, f"{alias}.pt")


def stylizer_context(batch: Mapping[str, Any]) -> dict[str, Any]:
    """What precomputed styles need to find a clip's stylized frames, from a collated batch."""
    context: dict[str, Any] = {}
    for key, name in (("id", "ids"), ("source", "sources")):
        if key in batch:
            context[name] = [str(v) for v in batch[key]]
    for key in ("frame_indices", "frame_times"):
        if key in batch:
            context[key] = batch[key]
    return context


def pathway_frames(spec: InputSpec) -> list[int]:
    """The frame count of each pathway of the model's input (what the shuffles permute)."""
    return [shape[2] for shape in spec_shapes(spec)]


def render_views(
    sampler: Callable[..., dict[str, Any]],
    spec: InputSpec,
    batch: Mapping[str, Any],
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """The model-input pair views of a collated batch, rendered on ``device``.

    The sampler returns float views (one way: it is told the pathways' frame counts, never
    handed the packing); the probe packs them and then forms the shuffled views from the packed
    anchor, each pathway's frames reordered (:func:`~stbias.stylization.pairs.shuffled_views`).
    """
    clip01 = video_to_float(batch["video"].to(device))
    index = torch.as_tensor(batch["index"]).cpu()
    context = stylizer_context(batch)
    if "flow" in batch and getattr(sampler, "two_stream", False):
        # precomputed flow images of two-stream (RGB + flow) pairs
        context["flow_image"] = video_to_float(batch["flow"].to(device))
    if getattr(sampler, "two_stream", False):
        views = sampler(clip01, index, **context)
    else:
        views = sampler(clip01, index, frames=pathway_frames(spec), **context)
    views.update({name: pack_inputs(views[name], spec) for name in view_names(views)})
    return shuffled_views(views)


STYLIZE_ON = ("auto", "device", "loader")


def resolve_stylize_on(stylize_on: str, device_type: str, num_workers: int) -> str:
    """Where the views are rendered: ``device`` or ``loader``; ``auto`` means the loader's
    workers when the model runs on the CPU and there are workers (the styles then run beside
    the forward pass instead of after it), the model's device otherwise (an accelerator renders
    them in a fraction of the time a worker's CPU core would, and the workers are busy decoding).
    """
    if stylize_on not in STYLIZE_ON:
        valid = ", ".join(STYLIZE_ON)
        raise StbiasError(f"unknown probe.stylize_on {stylize_on!r}; valid: {valid}")
    if stylize_on != "auto":
        return stylize_on
    return "loader" if device_type == "cpu" and num_workers > 0 else "device"


class ViewsInLoader:
    """A ``collate_fn`` that renders the pair views in the DataLoader's workers, on the CPU.

    ``probe.stylize_on=loader``: stylization and packing run beside the model's forward pass
    instead of inside the probe's step. Each clip's styles and permutations are seeded by its
    index, so the views, and the statistics, are those of ``stylize_on=device``.
    """

    def __init__(self, sampler: Callable[..., dict[str, Any]], spec: InputSpec) -> None:
        self.sampler = sampler
        self.spec = spec

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = default_collate(samples)
        with torch.no_grad():
            batch["views"] = render_views(self.sampler, self.spec, batch)
        return batch


class ProbeModule(pl.LightningModule):
    """Run with ``Trainer.test``; afterwards ``results`` holds each layer's scores.

    Args:
        model: the network, used frozen in eval mode.
        layers: alias -> module path of every probed layer.
        channels: alias -> unit count of every probed layer.
        spec: the model's input spec (normalisation, pathways).
        sampler: ``sampler(clip01, index, frames=...)`` -> float pair views (``PairSampler``).
        layout: how the tapped outputs are laid out (see ``stbias.models.taps``).
        include_cls: average the class token with the patch tokens.
        bootstrap: bootstrap replicates per layer.
        seed: seed of the bootstrap weights.
        lam: unit-wise threshold used for ``results``.
        estimator: layer-wise estimator.
        model_name: the model's name, for messages.
        state_dir: folder for partial and final sums (None: keep nothing on disk).
        save_every: steps between two saves of the partial sums.
        state_meta: plain values saved with each layer's final sums (e.g. the cache key), plus
            ``skipped_clips``.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Mapping[str, str],
        channels: Mapping[str, int],
        spec: InputSpec,
        sampler: Callable[..., dict[str, Any]],
        layout: str = "cnn",
        include_cls: bool = False,
        bootstrap: int = 0,
        seed: int = 0,
        lam: float = 0.5,
        estimator: str = "pooled",
        model_name: str = "model",
        state_dir: str | None = None,
        save_every: int = 50,
        state_meta: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.layers = dict(layers)
        self.spec = spec
        self.sampler = sampler
        self.layout = layout
        self.include_cls = include_cls
        self.lam = lam
        self.model_name = model_name
        self.state_dir = state_dir
        self.save_every = max(int(save_every), 1)
        self.state_meta = dict(state_meta or {})
        self.stats = nn.ModuleDict(
            {
                alias: PairStatistics(
                    int(channels[alias]), bootstrap=bootstrap, seed=seed, estimator=estimator
                )
                for alias in self.layers
            }
        )
        self.skipped = torch.zeros((), dtype=torch.float64)
        # the layers' hooks: registered at the first forward pass, removed at the run's end
        self.tap = LayerTap(self.model, self.layers, model_name=model_name, stop_early=True)
        # each layer's sums summed over processes at the end of the run (what is reported)
        self.final: dict[str, PairStatistics] = {}
        self.results: dict[str, dict[str, Any]] = {}
        self.skipped_clips = 0
        self.clips_done = 0  # clips of this process already in the sums (resumed or run)
        self.clips_run = 0  # clips this run pushed through the model
        self.cache_failed = False  # a cache write failed (disk full): no further tries

    def train(self, mode: bool = True) -> ProbeModule:
        """Keep the probed model in eval mode whatever Lightning asks."""
        super().train(mode)
        self.model.eval()
        return self

    def features(self, x: torch.Tensor | list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Pooled ``(N, C)`` features of every probed layer from one forward pass.

        The layers' hooks are registered once, at the first pass, and stay until
        :meth:`close` (the end of the test loop).
        """
        # channels-last clips run 3D convolutions markedly faster (oneDNN on CPU, cuDNN on GPU)
        x = [channels_last(p) for p in x] if isinstance(x, (list, tuple)) else channels_last(x)
        outputs = self.tap.attach().run(x)
        return pool_outputs(outputs, self.layout, include_cls=self.include_cls)

    def close(self) -> None:
        """Remove the layers' hooks from the model."""
        self.tap.remove()

    def on_test_end(self) -> None:
        """The run is over: the model goes back without hooks."""
        self.close()

    def teardown(self, stage: str) -> None:
        """Also when the run stopped on an error."""
        self.close()

    def _partial_path(self) -> str | None:
        if self.state_dir is None or self.trainer is None:
            return None
        rank, world = self.trainer.global_rank, self.trainer.world_size
        return os.path.join(self.state_dir, f"partial-rank{rank}-of{world}.pt")

    def setup(self, stage: str) -> None:
        """Pick up this process's partial sums from an interrupted run, if any."""
        path = self._partial_path()
        if path is None or not os.path.exists(path):
            return
        try:
            saved = load_tensors(path, what="partial sums")
            layers = saved["layers"]
            if sorted(layers) != sorted(self.stats):
                raise StbiasError(f"it holds layers {sorted(layers)}, not {sorted(self.stats)}")
            for alias, metric in self.stats.items():
                expected = {k: tuple(v.shape) for k, v in metric.sums().items()}
                found = {k: tuple(v.shape) for k, v in layers[alias].items()}
                if found != expected:
                    raise StbiasError(f"layer {alias} has other unit counts than the model's")
            skipped, clips_done = saved["skipped"].to(torch.float64), int(saved["clips_done"])
        except (StbiasError, KeyError, TypeError, AttributeError, ValueError) as err:
            log.warning("ignoring the partial sums %s (%s); starting this share over", path, err)
            return
        for alias, metric in self.stats.items():
            metric.load_sums(layers[alias])
        self.skipped, self.clips_done = skipped, clips_done

    def _save_partial(self) -> None:
        path = self._partial_path()
        if path is None:
            return
        layers = {alias: metric.sums() for alias, metric in self.stats.items()}
        state = {"clips_done": self.clips_done, "skipped": self.skipped, "layers": layers}
        self._cache(lambda: torch_save(state, path))

    def _cache(self, write: Callable[[], None]) -> None:
        """Write a cache file; a failure (disk full) is one warning, never the run's end."""
        if self.cache_failed:
            return
        try:
            write()
        except WriteError as err:
            self.cache_failed = True
            log.warning("%s; going on without caching the pair statistics", err)

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Add the static and dynamic pairs of one batch of clips to every layer's metric.

        A batch that brings its ``views`` (rendered by :class:`ViewsInLoader` in the loader's
        workers) is not stylized again. A sample whose own video could not be read (the
        dataset's replacement, ``skipped = 1``) is counted in ``skipped_clips`` and adds no
        pairs: no clip is counted twice.
        """
        index = torch.as_tensor(batch["index"]).cpu()
        read = torch.ones(len(index), dtype=torch.bool)
        if "skipped" in batch:
            skipped = torch.as_tensor(batch["skipped"]).reshape(-1).bool().cpu()
            self.skipped += skipped.sum().double()
            read = ~skipped
        if bool(read.any()):
            self._add_pairs(batch, index, read)
        self.clips_done += len(index)
        self.clips_run += len(index)
        if (batch_idx + 1) % self.save_every == 0:
            self._save_partial()

    def _add_pairs(self, batch: Mapping[str, Any], index: torch.Tensor, read: torch.Tensor) -> None:
        if "views" in batch:
            views = batch["views"]
        else:
            views = render_views(self.sampler, self.spec, batch, self.device)
        names = view_names(views)
        feats = self.features(stack_views(views, names))
        for alias, feat in feats.items():
            require_finite(
                feat,
                f"layer {alias} of {self.model_name} gave NaN or infinite features for "
                f"clips {list(batch.get('id', index.tolist()))[:8]}",
                "nothing was saved for this batch",
            )
            chunks = split_views(feat, names)
            for factor, (first, second) in views["pairs"].items():
                mask = views["factor"][factor].cpu().bool() & read
                if bool(mask.any()):
                    on = mask.to(feat.device)
                    self.stats[alias].update(
                        chunks[first][on], chunks[second][on], factor, ids=index[mask]
                    )

    def on_test_epoch_end(self) -> None:
        """Sum every process's sums, keep them on disk, score each layer."""
        skipped = self.skipped.to(self.device)
        if self.trainer.world_size > 1:
            skipped = self.all_gather(skipped).sum()
        self.skipped_clips = int(round(float(skipped)))
        self.cache_failed = False  # the final sums are worth another try
        for alias, metric in self.stats.items():
            with metric.sync_context(should_unsync=True):
                self.final[alias] = metric.snapshot()
            self.final[alias].meta = {**self.state_meta, "skipped_clips": self.skipped_clips}
            if self.state_dir is not None and self.trainer.is_global_zero:
                self._cache(
                    lambda m=self.final[alias], a=alias: m.save_state(
                        layer_state_path(self.state_dir, a), meta=m.meta
                    )
                )
        self.results = {a: layer_report(m, self.lam) for a, m in self.final.items()}
        partial = self._partial_path()
        if partial is not None:
            self.trainer.strategy.barrier()
            if os.path.exists(partial):
                os.remove(partial)


def layer_report(metric: PairStatistics, lam: float, estimator: str | None = None) -> dict:
    """A layer's entry of ``results.json`` (plus ``unit_scores``) from its summed pair
    statistics: the one place a report is made, for sums just computed and cached ones alike."""
    return metric.report(lam=lam, estimator=estimator)


def build_probe_module(
    model: nn.Module,
    layers: Mapping[str, str],
    spec: InputSpec,
    sampler: Callable[..., dict[str, Any]],
    *,
    channels: Mapping[str, int] | None = None,
    layout: str = "cnn",
    model_name: str = "model",
    **settings: Any,
) -> ProbeModule:
    """The probe's Lightning module: the one place a :class:`ProbeModule` is made.

    Channel counts not given (``channels``) come from one forward pass of a clip at ``spec``
    (:func:`~stbias.models.taps.infer_channels`). ``settings`` are :class:`ProbeModule`'s
    (``include_cls``, ``bootstrap``, ``seed``, ``lam``, ``estimator``, ``state_dir``,
    ``save_every``, ``state_meta``).
    """
    counts = {a: int(c) for a, c in dict(channels or {}).items() if a in layers}
    missing = {a: p for a, p in layers.items() if a not in counts}
    if missing:
        counts.update(infer_channels(model, missing, spec, layout, model_name))
    return ProbeModule(
        model, layers, counts, spec, sampler, layout=layout, model_name=model_name, **settings
    )


class UnrepeatedSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` of ``range(length)``, from the ``skip``-th on.

    Unlike ``DistributedSampler`` it never pads shards with repeated samples, so statistics summed
    over processes equal those of one process; ``skip`` resumes a shard part-way.
    """

    def __init__(self, length: int, rank: int = 0, world: int = 1, skip: int = 0) -> None:
        self.indices = list(range(rank, length, world))[skip:]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class EvalData(pl.LightningDataModule):
    """One evaluation pass over ``dataset`` in index order, split across processes.

    Args:
        dataset: a map-style dataset of sample dicts.
        batch_size: clips per process and step.
        num_workers: DataLoader worker processes (``auto``: one per free core, at most 8).
        prefetch_factor: batches each worker loads ahead (``None``: PyTorch's default).
        pin_memory: page-locked batches; ``auto`` pins when the model runs on CUDA.
        collate_fn: how samples become a batch (``None``: PyTorch's default; e.g.
            :class:`ViewsInLoader`).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int = 8,
        num_workers: int | str = 0,
        prefetch_factor: int | None = None,
        pin_memory: bool | str = "auto",
        collate_fn: Callable[[list], Any] | None = None,
    ) -> None:
        super().__init__()
        self.collate_fn = collate_fn
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.num_workers = resolve_workers(num_workers)
        self.prefetch_factor = prefetch_factor
        self.pin_memory = pin_memory

    def test_dataloader(self) -> DataLoader:
        """Batches of this process's share not yet in the module's (resumed) sums."""
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        module = trainer.lightning_module if trainer else None
        skip = int(getattr(module, "clips_done", 0))
        device = trainer.strategy.root_device.type if trainer else "cpu"
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=UnrepeatedSampler(len(self.dataset), rank, world, skip),
            collate_fn=self.collate_fn,
            **loader_kwargs(self.num_workers, self.prefetch_factor, self.pin_memory, device),
        )
