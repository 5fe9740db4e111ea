"""`task=probe`: static/dynamic scores of every probed layer of a model on a dataset.

The summed pair statistics of each layer are cached under ``probe.cache_dir/<key>/``, the key a
hash of everything that changes them (model config and weights file, dataset, stylization, seed,
clip count, bootstrap, pooling); λ, the estimator and the choice of layers are not in it. A λ sweep
or a run on a subset of layers therefore re-thresholds the cached sums without a forward pass, and
an interrupted run picks up its partial sums (see ``stbias.lit.probe``).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import os
from typing import Any

import pandas as pd
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import Subset

from stbias import io
from stbias.api import Probe, ProbeResults
from stbias.data.loading import LOADER_KEYS, SPEED_KEYS
from stbias.data.subsets import clip_info, files_fingerprint
from stbias.errors import StbiasError
from stbias.lit.probe import EvalData, ViewsInLoader, layer_state_path, resolve_stylize_on
from stbias.metrics import PairStatistics
from stbias.models.inputs import InputSpec, check_pair_input
from stbias.models.taps import select_layers
from stbias.models.zoo import import_object
from stbias.plotting import save_figure
from stbias.plotting.pairs import fig3
from stbias.plotting.units import unit_classes
from stbias.results import layer_rows, rows_of
from stbias.tasks.dataset_setup import choose_probe_clips
from stbias.tasks.loggers import (
    build_logger,
    finish_logger,
    log_run,
    record_config,
    run_files,
    run_identity,
)
from stbias.tasks.model_setup import build_model, prepare_model, weights_label, weights_record
from stbias.tasks.probe_series import run_series
from stbias.tasks.record import write_results
from stbias.tasks.run_config import check_results, choice, output_dir, plain
from stbias.tasks.trainer_setup import build_trainer, device_label

log = logging.getLogger(__name__)
_CACHE_VERSION = 4  # 4: the replaced samples of unreadable videos add no pairs
PAIR_METRICS = ("unitwise", "layerwise")
# the figure each pair metric leads with: Kowal et al. Fig. 3, or the unit classes of every layer
FIGURE = {"layerwise": "fig3", "unitwise": "units"}


def _weights_fingerprint(path: Any) -> Any:
    if not path:
        return None
    path = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.isfile(path):
        raise StbiasError(
            f"model.checkpoint={path} is not a file; give a local weights file "
            "(model.checkpoint=/path/to/weights.pyth|.ckpt|.pt) or model.checkpoint=null"
        )
    st = os.stat(path)
    return {"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _code_fingerprint(model_cfg: Any) -> str | None:
    """For model=custom: a hash of the source file of the constructor (its code can change)."""
    constructor = model_cfg.get("builder", {}).get("constructor")
    if not constructor:
        return None
    try:
        source = inspect.getsourcefile(import_object(str(constructor)))
        with open(source, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except (TypeError, OSError):
        return f"no source for {constructor}"


def cache_key(cfg: Any, data_fingerprint: str = "") -> str:
    """A hash of every setting and file that changes a layer's pair statistics.

    The model config and its weights file, the model code of ``model=custom``, the dataset
    config, the files of the clips used (:func:`stbias.data.subsets.files_fingerprint`), the
    stylization, seed, clip count and sampling, bootstrap and pooling; not λ, the estimator or
    the choice of layers, nor the loading speed settings (``num_workers``, ``decode_threads``, ...).
    """
    model = plain(cfg.model)
    for key in ("layers", "channels", "reduced"):
        model.pop(key, None)
    dataset = {k: v for k, v in plain(cfg.dataset).items() if k not in SPEED_KEYS}
    described = {
        "version": _CACHE_VERSION,
        "model": model,
        "weights": _weights_fingerprint(cfg.model.get("checkpoint")),
        "code": _code_fingerprint(cfg.model),
        "dataset": dataset,
        "files": data_fingerprint,
        "stylization": plain(cfg.stylization),
        "seed": int(cfg.seed),
        "num_clips": cfg.probe.num_clips,
        "sampling": str(cfg.probe.sampling),
        "bootstrap": int(cfg.probe.bootstrap),
        "include_cls": bool(cfg.probe.include_cls),
    }
    text = json.dumps(described, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_cached(path: str, key: str, units: int | None) -> PairStatistics | None:
    """The cached sums of one layer, or None (with one warning) when the file cannot be used.

    A file that is unreadable, belongs to another key or holds another unit count than the
    layer has is removed, so that the layer is computed again.
    """
    try:
        metric = PairStatistics.from_file(path)
        if metric.meta.get("key") != key:
            raise StbiasError(f"it belongs to cache key {metric.meta.get('key')!r}, not {key!r}")
        if "skipped_clips" not in metric.meta:
            raise StbiasError("it does not say how many clips were skipped")
        if units is not None and metric.num_units != int(units):
            raise StbiasError(f"it holds {metric.num_units} units, the layer has {units}")
    except (StbiasError, KeyError, TypeError, ValueError, RuntimeError) as err:
        log.warning("cannot use the cached statistics %s (%s); computing them again", path, err)
        with contextlib.suppress(FileNotFoundError):  # another process may have removed it
            os.remove(path)
        return None
    return metric


def _layer_file(state_dir: str, alias: str, path: str) -> str:
    # the module path is part of the name: an alias re-pointed elsewhere is another layer
    digest = hashlib.sha256(path.encode()).hexdigest()[:8]
    return layer_state_path(state_dir, f"{alias}-{digest}")


def write_outputs(folder: str, record: dict[str, Any], unit_scores: dict[str, Any]) -> list[str]:
    """results.json, results.csv, unit_scores.npz and the Fig. 3 plots; returns the figures."""
    meta = {k: record[k] for k in ("model", "dataset", "stylization", "seed")}
    meta.update(weights=record["weights"], weights_sha256=record["weights_sha256"])
    check_results(record, "task=probe")
    io.write_npz(os.path.join(folder, "unit_scores.npz"), unit_scores)
    io.write_csv(os.path.join(folder, "clips.csv"), record.pop("clips"))
    write_results(folder, record)
    io.write_csv(os.path.join(folder, "results.csv"), layer_rows(record["layers"], meta))
    title = (
        f"{record['model']} ({weights_label(record)}) on {record['dataset']}, λ = {record['lam']}"
    )
    figure = draw(pd.DataFrame(rows_of(record, folder)), record["metric"], title)
    return save_figure(figure, os.path.join(folder, FIGURE[record["metric"]]))


# results.json's number -> its W&B summary name: probe/<class>_<name>/<layer>
SUMMARY_NAMES = {"percent": "pct", "scores": "score", "units": "units"}


def layer_summary(record: dict[str, Any], prefix: str = "probe", model: str = "") -> dict[str, Any]:
    """Per-layer values as flat keys ``probe/<class>_pct/<layer>`` (a W&B run summary).

    With bootstrap intervals (``probe.bootstrap > 0``) each value has its bounds beside it:
    ``probe/<class>_pct_lo/<layer>`` and ``..._hi``. ``model`` (``c2d_tiny/``) goes before the
    layer where one run holds several models (the quickstart).
    """
    summary = {}
    for layer, entry in record["layers"].items():
        where = f"{model}{layer}"
        ci = entry.get("ci") or {}
        for key, name in SUMMARY_NAMES.items():
            for cls, value in entry[key].items():
                summary[f"{prefix}/{cls}_{name}/{where}"] = value
                bounds = (ci.get(key) or {}).get(cls)
                if bounds is not None:
                    summary[f"{prefix}/{cls}_{name}_lo/{where}"] = bounds[0]
                    summary[f"{prefix}/{cls}_{name}_hi/{where}"] = bounds[1]
    return summary


def log_results(
    logger: Any, record: dict[str, Any], figures: list[str], folder: str | None = None
) -> None:
    """The run summary ``probe/...`` per layer, a results table, the figure and the run's files
    (``results.json``, ``unit_scores.npz``, ...) as an artifact; then close."""
    meta = {k: record[k] for k in ("model", "dataset", "stylization", "seed")}
    rows = layer_rows(record["layers"], meta)
    columns = list(rows[0])
    log_run(
        logger,
        config=record_config(record, "stylization", "metric", "lam"),
        summary=layer_summary(record),
        tables={"probe/results": (columns, [[r.get(c) for c in columns] for r in rows])},
        images={"probe/figure": figures},
        files=run_files(folder) if folder else (),
    )
    finish_logger(logger)


def summary_table(record: dict[str, Any]) -> str:
    """A plain-text table of every layer, led by what ``metric`` names.

    ``metric=layerwise`` leads with the layer-wise split (raw scores ``S_F`` and the softmax
    percentages); ``metric=unitwise`` leads with the unit classes at λ (counts and percentages).
    """
    header = (
        f"{record['model']} ({weights_label(record)}) on {record['dataset']} "
        f"({record['stylization']}), {record['num_clips']} clips, λ = {record['lam']}"
    )
    if record.get("metric") == "layerwise":
        lines = [
            header,
            f"{'layer':<14} {'S_dyn':>7} {'S_stat':>7} {'dyn%':>6} {'stat%':>6} {'res%':>6}"
            "   units dyn/stat/joint/res (dead)",
        ]
        for layer, e in record["layers"].items():
            u = e["units"]
            lines.append(
                f"{layer:<14} {e['scores']['dynamic']:7.3f} {e['scores']['static']:7.3f} "
                f"{e['percent']['dynamic']:6.1f} {e['percent']['static']:6.1f} "
                f"{e['percent']['residual']:6.1f}   "
                f"{u['dynamic']}/{u['static']}/{u['joint']}/{u['residual']} ({u['dead']})"
            )
        return "\n".join(lines)
    lines = [
        header,
        f"{'layer':<14} {'units':>6} {'dyn':>5} {'stat':>5} {'joint':>5} {'res':>5} {'dead':>5}"
        f" {'dyn%':>6} {'stat%':>6} {'joint%':>6}   S_dyn  S_stat",
    ]
    for layer, e in record["layers"].items():
        u = e["units"]
        total = sum(u[c] for c in ("dynamic", "static", "joint", "residual")) or 1
        lines.append(
            f"{layer:<14} {total:6d} {u['dynamic']:5d} {u['static']:5d} {u['joint']:5d} "
            f"{u['residual']:5d} {u['dead']:5d} {100 * u['dynamic'] / total:6.1f} "
            f"{100 * u['static'] / total:6.1f} {100 * u['joint'] / total:6.1f} "
            f"{e['scores']['dynamic']:7.3f} {e['scores']['static']:7.3f}"
        )
    return "\n".join(lines)


def draw(table: Any, metric: str, title: str) -> Any:
    """The run's figure from its table (``stbias.results.rows_of``): Kowal et al. Fig. 3
    (``metric=layerwise``) or the unit classes of every layer (``metric=unitwise``)."""
    if metric == "layerwise":
        return fig3(table, title=title)
    return unit_classes(table, title=title)


def probe(cfg: Any, clips: Any = None) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Compute (or load from the cache) every requested layer's scores.

    Args:
        cfg: the composed config.
        clips: the chosen clips (a dataset) when the caller already built them for this config
            (a checkpoint series probes every checkpoint on the same clips); None builds them.

    Returns the results record, the per-unit scores and the objects used.
    """
    name, layers, spec = _setup(cfg)
    dataset = clips if clips is not None else choose_probe_clips(cfg, spec)
    _header(cfg, name, dataset, layers)
    key = cache_key(cfg, files_fingerprint(dataset))
    state_dir = os.path.join(os.path.abspath(str(cfg.probe.cache_dir)), key)
    cached = _cached_layers(cfg, layers, state_dir, key)
    missing = {a: p for a, p in layers.items() if a not in cached}
    objects: dict[str, Any] = {"dataset": dataset}
    stats: dict[str, PairStatistics] = dict(cached)
    clips_run, skipped = 0, None
    if missing:
        fresh = _probe_layers(cfg, name, spec, missing, dataset, state_dir, key, objects)
        if fresh is None:  # a non-zero rank of a multi-process run: rank 0 reports
            return {}, {}, objects
        stats.update(fresh.stats)
        clips_run, skipped = fresh.clips_run, fresh.skipped_clips
    for metric in cached.values():
        skipped = int(metric.meta["skipped_clips"]) if skipped is None else skipped
    # fresh and cached sums scored by the one report of the API's results
    lam, estimator = float(cfg.metric.lam), str(cfg.metric.estimator)
    results = ProbeResults(
        {alias: stats[alias] for alias in layers}, lam, estimator, name, len(dataset)
    )
    cache = {"key": key, "layers_from_cache": sorted(cached), "clips_run": clips_run}
    record = _record(cfg, name, dataset, results, skipped, cache)
    return record, results.unit_score_arrays(), objects


def _setup(cfg: Any) -> tuple[str, dict[str, str], InputSpec]:
    """The model's name, the layers to probe (alias -> module path) and its input spec; one
    line for a measure of another task, a model without layers or a two-stream mismatch."""
    name = choice(cfg, "model")
    if str(cfg.metric.get("name")) not in PAIR_METRICS:
        raise StbiasError(
            f"task=probe reports the pair measures metric={' or metric='.join(PAIR_METRICS)}; "
            f"metric={cfg.metric.get('name')} belongs to another task (leave task unset)"
        )
    prepare_model(cfg, "task=probe", warn_random=True)
    declared = plain(cfg.model.get("layers")) or {}
    if not declared:
        raise StbiasError(
            f"model {name} declares no layers to probe; set model.layers={{alias: module.path}} "
            f"(python run.py task=layers model={name} lists the module paths)"
        )
    # probe.layers, else the model's own choice (probe_layers: no tap repeating another), else all
    chosen = plain(cfg.probe.layers) or plain(cfg.model.get("probe_layers")) or None
    layers = select_layers(declared, chosen, name)
    spec = InputSpec.from_dict(plain(cfg.model.input))
    check_pair_input(spec, bool(cfg.stylization.get("two_stream", False)), f"model {name}")
    return name, layers, spec


def _header(cfg: Any, name: str, dataset: Any, layers: dict[str, str]) -> None:
    log.info(
        "probe: %s (%s) | %s, split %s: %d of %d clips (%s) | layers %s | %s",
        name,
        weights_label(weights_record(cfg.model)),
        choice(cfg, "dataset"),
        cfg.dataset.get("split"),
        len(dataset),
        len(dataset.dataset if isinstance(dataset, Subset) else dataset),
        cfg.probe.sampling,
        ", ".join(layers),
        device_label(cfg.trainer),
    )


def _cached_layers(
    cfg: Any, layers: dict[str, str], state_dir: str, key: str
) -> dict[str, PairStatistics]:
    """The layers whose sums the cache holds for ``key`` (a λ sweep, a layer subset, a rerun)."""
    channels = dict(plain(cfg.model.get("channels")) or {})
    cached = {}
    for alias, path in layers.items():
        file = _layer_file(state_dir, alias, path)
        if os.path.exists(file):
            metric = load_cached(file, key, channels.get(alias))
            if metric is not None:
                cached[alias] = metric
    missing = [a for a in layers if a not in cached]
    if cached:  # a λ sweep or layer subset served from the cache says so
        log.info(
            "from the cache %s: %s%s",
            state_dir,
            ", ".join(cached),
            f"; probing {', '.join(missing)}" if missing else " (no forward pass)",
        )
    return cached


def _probe_layers(
    cfg: Any,
    name: str,
    spec: InputSpec,
    missing: dict[str, str],
    dataset: Any,
    state_dir: str,
    key: str,
    objects: dict[str, Any],
) -> Any:
    """Run an :class:`stbias.api.Probe` of the layers ``missing`` over ``dataset``, move their
    sums into the cache; the fresh results (None on the other ranks of a multi-process run)."""
    run_dir = os.path.join(state_dir, "run-" + "-".join(sorted(missing)))
    os.makedirs(run_dir, exist_ok=True)
    model = build_model(cfg.model)
    channels = dict(plain(cfg.model.get("channels")) or {})
    probe = Probe(
        model,
        missing,
        spec,
        instantiate(cfg.stylization),
        channels={a: c for a, c in channels.items() if a in missing},
        layout=str(cfg.model.get("layout", "cnn")),
        include_cls=bool(cfg.probe.include_cls),
        bootstrap=int(cfg.probe.bootstrap),
        seed=int(cfg.seed),
        lam=float(cfg.metric.lam),
        estimator=str(cfg.metric.estimator),
        batch_size=int(cfg.probe.batch_size),
        model_name=name,
        state_dir=run_dir,
        save_every=int(cfg.probe.save_every),
        state_meta={"key": key},
    )
    trainer = build_trainer(
        cfg.trainer,
        fixed={"use_distributed_sampler": False, "enable_checkpointing": False},
        task="task=probe",
        progress=f"probing {name}",
    )
    loader = {k: cfg.dataset[k] for k in LOADER_KEYS[1:] if k in cfg.dataset}
    data = EvalData(dataset, cfg.probe.batch_size, cfg.probe.num_workers, **loader)
    device = trainer.strategy.root_device.type
    stylize_on = str(cfg.probe.get("stylize_on", "device"))
    if resolve_stylize_on(stylize_on, device, data.num_workers) == "loader":
        data.collate_fn = ViewsInLoader(probe.sampler, spec)
    fresh = probe.run(data, trainer=trainer)
    objects.update(model=model, module=probe.last_module, trainer=trainer, probe=probe)
    if not trainer.is_global_zero:
        return None
    for alias, path in missing.items():
        written = layer_state_path(run_dir, alias)
        if os.path.exists(written):  # not when the cache could not be written (disk full)
            os.replace(written, _layer_file(state_dir, alias, path))
    return fresh


def _record(
    cfg: Any,
    name: str,
    dataset: Any,
    results: ProbeResults,
    skipped: int | None,
    cache: dict[str, Any],
) -> dict[str, Any]:
    """``results.json`` of a probe: the header, every layer's report, the cache and the clips."""
    return {
        "task": "probe",
        "model": name,
        **weights_record(cfg.model),
        "dataset": choice(cfg, "dataset"),
        "stylization": choice(cfg, "stylization"),
        "seed": int(cfg.seed),
        "num_clips": len(dataset),
        "sampling": str(cfg.probe.sampling),
        "skipped_clips": skipped,
        "metric": str(cfg.metric.name),
        "lam": float(cfg.metric.lam),
        "layers": {alias: dict(entry) for alias, entry in results.items()},
        "cache": cache,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "environment": io.environment(),
        "clips": [{"index": i, **clip_info(dataset, k)} for k, i in enumerate(_indices(dataset))],
    }


def _indices(dataset: Any) -> list[int]:
    return (
        [int(i) for i in dataset.indices]
        if isinstance(dataset, Subset)
        else list(range(len(dataset)))
    )


def run(cfg: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``task=probe``: probe, then write results, figures and the log into the run directory."""
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    if cfg.probe.get("checkpoints"):  # a checkpoint series: stbias.tasks.probe_series
        return run_series(cfg, probe)
    record, unit_scores, objects = probe(cfg)
    if not record:  # a non-zero rank of a multi-process run: rank 0 reports
        return record, objects
    folder = output_dir()
    figures = write_outputs(folder, record, unit_scores)
    log.info("%s", summary_table(record))
    identity = run_identity("probe", record["model"], record["dataset"])
    log_results(build_logger(cfg.get("logger"), folder, **identity), record, figures, folder)
    log.info("results: %s", os.path.join(folder, "results.json"))
    objects["figures"] = figures
    return record, objects
