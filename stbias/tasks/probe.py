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
import json
import logging
import os
from typing import Any

import pandas as pd
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import Subset

from stbias import io
from stbias.data.subsets import choose_clips, clip_info, files_fingerprint
from stbias.errors import StbiasError
from stbias.lit.probe import EvalData, ProbeModule, layer_state_path
from stbias.metrics import PairStatistics
from stbias.models.inputs import InputSpec, check_pair_input, pack_inputs
from stbias.models.taps import capture, channels_of, select_layers
from stbias.plotting import save_figure
from stbias.plotting.pairs import fig3
from stbias.plotting.units import unit_classes
from stbias.results import rows_of
from stbias.tasks.common import (
    build_dataset,
    build_logger,
    build_model,
    build_trainer,
    choice,
    device_label,
    output_dir,
    plain,
    prepare_model,
    weights_label,
    weights_record,
)
from stbias.tasks.loggers import finish_logger, log_run, run_identity

log = logging.getLogger(__name__)
_CACHE_VERSION = 3
PAIR_METRICS = ("unitwise", "layerwise")
# the figure each pair metric leads with: Kowal et al. Fig. 3, or the unit classes of every layer
FIGURE = {"layerwise": "fig3", "unitwise": "units"}


def infer_channels(
    model: Any, layers: dict[str, str], spec: InputSpec, layout: str, name: str
) -> dict[str, int]:
    """Channel counts of layers a config does not declare, from one forward pass of a clip."""
    clip = torch.rand(1, spec.channels, spec.frames, spec.size, spec.size)
    with torch.no_grad():
        outputs = capture(model.eval(), layers, pack_inputs(clip, spec), model_name=name)
    return {alias: channels_of(out, layout) for alias, out in outputs.items()}


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
    import inspect

    from stbias.models.zoo import import_object

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
    the choice of layers.
    """
    model = plain(cfg.model)
    for key in ("layers", "channels", "reduced"):
        model.pop(key, None)
    described = {
        "version": _CACHE_VERSION,
        "model": model,
        "weights": _weights_fingerprint(cfg.model.get("checkpoint")),
        "code": _code_fingerprint(cfg.model),
        "dataset": plain(cfg.dataset),
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


def layer_rows(layers: dict[str, Any], meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat rows for results.csv: one per layer."""
    rows = []
    for layer, entry in layers.items():
        prefix = layer.split("_")[0]
        row = {
            **meta,
            "layer": layer,
            "pathway": prefix if prefix in ("slow", "fast", "fused") else "",
        }
        for key in ("scores", "dims", "percent", "units", "n_pairs"):
            row.update({f"{key}_{k}": v for k, v in entry[key].items()})
        row["lam"] = entry["lam"]
        for key, interval in (entry.get("ci") or {}).get("percent", {}).items():
            row[f"percent_{key}_lo"], row[f"percent_{key}_hi"] = interval
        rows.append(row)
    return rows


def write_outputs(folder: str, record: dict[str, Any], unit_scores: dict[str, Any]) -> list[str]:
    """results.json, results.csv, unit_scores.npz and the Fig. 3 plots; returns the figures."""
    meta = {k: record[k] for k in ("model", "dataset", "stylization", "seed")}
    meta.update(weights=record["weights"], weights_sha256=record["weights_sha256"])
    io.write_npz(os.path.join(folder, "unit_scores.npz"), unit_scores)
    io.write_csv(os.path.join(folder, "clips.csv"), record.pop("clips"))
    io.write_json(os.path.join(folder, "results.json"), record)
    io.write_csv(os.path.join(folder, "results.csv"), layer_rows(record["layers"], meta))
    title = (
        f"{record['model']} ({weights_label(record)}) on {record['dataset']}, λ = {record['lam']}"
    )
    figure = draw(pd.DataFrame(rows_of(record, folder)), record["metric"], title)
    return save_figure(figure, os.path.join(folder, FIGURE[record["metric"]]))


def layer_summary(record: dict[str, Any], prefix: str = "probe") -> dict[str, Any]:
    """Per-layer values as flat keys ``probe/<class>_pct/<layer>`` (a W&B run summary)."""
    summary = {}
    for layer, entry in record["layers"].items():
        for cls, value in entry["percent"].items():
            summary[f"{prefix}/{cls}_pct/{layer}"] = value
        for factor, value in entry["scores"].items():
            summary[f"{prefix}/{factor}_score/{layer}"] = value
        for cls, value in entry["units"].items():
            summary[f"{prefix}/{cls}_units/{layer}"] = value
    return summary


def run_config(record: dict[str, Any]) -> dict[str, Any]:
    """What a run logs as its config: names of what ran (one type per key) and the full config."""
    keys = ("task", "model", "dataset", "stylization", "seed", "weights", "metric", "lam")
    return {**{k: record[k] for k in keys if k in record}, "config": record.get("config")}


def log_results(logger: Any, record: dict[str, Any], figures: list[str]) -> None:
    """The run summary ``probe/...`` per layer, a results table and the figure; then close."""
    meta = {k: record[k] for k in ("model", "dataset", "stylization", "seed")}
    rows = layer_rows(record["layers"], meta)
    columns = list(rows[0])
    log_run(
        logger,
        config=run_config(record),
        summary=layer_summary(record),
        tables={"probe/results": (columns, [[r.get(c) for c in columns] for r in rows])},
        images={"probe/figure": figures},
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
    channels = dict(plain(cfg.model.get("channels")) or {})
    spec = InputSpec.from_dict(plain(cfg.model.input))
    check_pair_input(spec, bool(cfg.stylization.get("two_stream", False)), f"model {name}")
    lam, estimator = float(cfg.metric.lam), str(cfg.metric.estimator)
    layout = str(cfg.model.get("layout", "cnn"))

    dataset = clips if clips is not None else choose_probe_clips(cfg, spec)
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
    key = cache_key(cfg, files_fingerprint(dataset))
    state_dir = os.path.join(os.path.abspath(str(cfg.probe.cache_dir)), key)
    cached = {}
    for alias, path in layers.items():
        file = _layer_file(state_dir, alias, path)
        if os.path.exists(file):
            metric = load_cached(file, key, channels.get(alias))
            if metric is not None:
                cached[alias] = metric
    missing = {a: p for a, p in layers.items() if a not in cached}
    objects: dict[str, Any] = {"dataset": dataset}
    results: dict[str, Any] = {}
    clips_run = 0
    skipped = None
    if missing:
        run_dir = os.path.join(state_dir, "run-" + "-".join(sorted(missing)))
        os.makedirs(run_dir, exist_ok=True)
        model = build_model(cfg.model)
        undeclared = {a: p for a, p in missing.items() if a not in channels}
        if undeclared:
            channels.update(infer_channels(model, undeclared, spec, layout, name))
        module = ProbeModule(
            model,
            missing,
            channels,
            spec,
            instantiate(cfg.stylization),
            layout=layout,
            include_cls=bool(cfg.probe.include_cls),
            bootstrap=int(cfg.probe.bootstrap),
            seed=int(cfg.seed),
            lam=lam,
            estimator=estimator,
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
        data = EvalData(dataset, cfg.probe.batch_size, cfg.probe.num_workers)
        trainer.test(module, datamodule=data, verbose=False)
        objects.update(model=model, module=module, trainer=trainer)
        if not trainer.is_global_zero:
            return {}, {}, objects
        for alias, path in missing.items():
            os.replace(layer_state_path(run_dir, alias), _layer_file(state_dir, alias, path))
        results.update(module.results)
        clips_run, skipped = module.clips_run, module.skipped_clips
    for alias, metric in cached.items():
        results[alias] = metric.report(lam=lam, estimator=estimator)
        skipped = int(metric.meta["skipped_clips"]) if skipped is None else skipped
    ordered = {alias: results[alias] for alias in layers}
    unit_scores = {
        f"{alias}/{factor}": scores
        for alias, entry in ordered.items()
        for factor, scores in entry.pop("unit_scores").items()
    }
    record = {
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
        "lam": lam,
        "layers": ordered,
        "cache": {
            "key": key,
            "layers_from_cache": sorted(cached),
            "clips_run": clips_run,
        },
        "config": OmegaConf.to_container(cfg, resolve=True),
        "environment": io.environment(),
        "clips": [{"index": i, **clip_info(dataset, k)} for k, i in enumerate(_indices(dataset))],
    }
    return record, unit_scores, objects


def choose_probe_clips(cfg: Any, spec: InputSpec) -> Any:
    """The dataset of ``cfg`` cut to the clips ``probe.num_clips`` and ``probe.sampling`` choose."""
    dataset = build_dataset(cfg.dataset, spec)
    chosen = choose_clips(dataset, cfg.probe.num_clips, str(cfg.probe.sampling), int(cfg.seed))
    return Subset(dataset, chosen) if len(chosen) < len(dataset) else dataset


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
        from stbias.tasks.probe_series import run_series

        return run_series(cfg)
    record, unit_scores, objects = probe(cfg)
    if not record:  # a non-zero rank of a multi-process run: rank 0 reports
        return record, objects
    folder = output_dir()
    figures = write_outputs(folder, record, unit_scores)
    log.info("%s", summary_table(record))
    identity = run_identity("probe", record["model"], record["dataset"])
    log_results(build_logger(cfg.get("logger"), folder, **identity), record, figures)
    log.info("results: %s", os.path.join(folder, "results.json"))
    objects["figures"] = figures
    return record, objects
