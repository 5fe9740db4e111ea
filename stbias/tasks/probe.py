"""`task=probe`: static/dynamic scores of every probed layer of a model on a dataset.

The summed pair statistics of each layer are cached under ``probe.cache_dir/<key>/``, the key a
hash of everything that changes them (model config and weights file, dataset, stylization, seed,
clip count, bootstrap, pooling); λ, the estimator and the choice of layers are not in it. A λ sweep
or a run on a subset of layers therefore re-thresholds the cached sums without a forward pass, and
an interrupted run picks up its partial sums (see ``stbias.lit.probe``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import Subset

from stbias import io
from stbias.data.subsets import choose_clips, clip_info
from stbias.errors import StbiasError
from stbias.lit.probe import EvalData, ProbeModule, layer_state_path
from stbias.metrics import PairStatistics
from stbias.models.inputs import InputSpec, check_pair_input, pack_inputs
from stbias.models.taps import capture, channels_of, select_layers
from stbias.plotting import save_figure
from stbias.plotting.pairs import fig3
from stbias.tasks.common import (
    apply_checkpoint_settings,
    build_dataset,
    build_logger,
    build_model,
    build_trainer,
    check_weights,
    choice,
    output_dir,
    plain,
    require_one_model,
    warn_if_random,
    weights_label,
    weights_record,
)

log = logging.getLogger(__name__)
_CACHE_VERSION = 2
PAIR_METRICS = ("unitwise", "layerwise")


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


def cache_key(cfg: Any) -> str:
    """A hash of every setting that changes a layer's pair statistics."""
    model = plain(cfg.model)
    for key in ("layers", "channels", "reduced"):
        model.pop(key, None)
    described = {
        "version": _CACHE_VERSION,
        "model": model,
        "weights": _weights_fingerprint(cfg.model.get("checkpoint")),
        "dataset": plain(cfg.dataset),
        "stylization": plain(cfg.stylization),
        "seed": int(cfg.seed),
        "num_clips": cfg.probe.num_clips,
        "sampling": str(cfg.probe.sampling),
        "bootstrap": int(cfg.probe.bootstrap),
        "include_cls": bool(cfg.probe.include_cls),
    }
    text = json.dumps(described, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
    figure = fig3({record["model"]: record["layers"]}, title=title)
    return save_figure(figure, os.path.join(folder, "fig3"))


def log_results(logger: Any, record: dict[str, Any], figures: list[str]) -> None:
    """Per-layer scalars under ``probe/...``, and for W&B a results table and the figures."""
    if not logger:
        return
    metrics = {}
    for layer, entry in record["layers"].items():
        for cls, value in entry["percent"].items():
            metrics[f"probe/{cls}_pct/{layer}"] = value
        for factor, value in entry["scores"].items():
            metrics[f"probe/{factor}_score/{layer}"] = value
        for cls, value in entry["units"].items():
            metrics[f"probe/{cls}_units/{layer}"] = value
    try:
        logger.log_hyperparams(record["config"])
        logger.log_metrics(metrics)
        if hasattr(logger, "log_table"):
            meta = {k: record[k] for k in ("model", "dataset", "stylization", "seed")}
            rows = layer_rows(record["layers"], meta)
            columns = list(rows[0])
            logger.log_table(
                "probe/results", columns=columns, data=[[r.get(c) for c in columns] for r in rows]
            )
            logger.log_image("probe/fig3", images=[f for f in figures if f.endswith(".png")])
        logger.finalize("success")
        if hasattr(logger, "log_table"):
            logger.experiment.finish()  # flush the W&B run now: this process may go on
    except Exception as err:  # noqa: BLE001 - logging must never lose a finished run
        log.warning("could not log to %s (%s: %s)", type(logger).__name__, type(err).__name__, err)


def summary_table(record: dict[str, Any]) -> str:
    """A plain-text table of the per-layer split and unit classes."""
    lines = [
        f"{record['model']} on {record['dataset']} ({record['stylization']}), "
        f"{record['num_clips']} clips, λ = {record['lam']}",
        f"{'layer':<14} {'S_dyn':>7} {'S_stat':>7} {'dyn%':>6} {'stat%':>6} {'res%':>6}"
        f"   units dyn/stat/joint/res (dead)",
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


def probe(cfg: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Compute (or load from the cache) every requested layer's scores.

    Returns the results record, the per-unit scores and the objects used.
    """
    name = choice(cfg, "model")
    if str(cfg.metric.get("name")) not in PAIR_METRICS:
        raise StbiasError(
            f"task=probe reports the pair measures metric={' or metric='.join(PAIR_METRICS)}; "
            f"metric={cfg.metric.get('name')} belongs to another task (leave task unset)"
        )
    require_one_model(cfg, "task=probe")
    apply_checkpoint_settings(cfg)
    check_weights(cfg.model, name)
    warn_if_random(cfg.model, name)
    declared = plain(cfg.model.get("layers")) or {}
    if not declared:
        raise StbiasError(
            f"model {name} declares no layers to probe; set model.layers={{alias: module.path}} "
            f"(python run.py task=layers model={name} lists the module paths)"
        )
    layers = select_layers(declared, plain(cfg.probe.layers) or None, name)
    channels = dict(plain(cfg.model.get("channels")) or {})
    spec = InputSpec.from_dict(plain(cfg.model.input))
    check_pair_input(spec, bool(cfg.stylization.get("two_stream", False)), f"model {name}")
    lam, estimator = float(cfg.metric.lam), str(cfg.metric.estimator)
    state_dir = os.path.join(os.path.abspath(str(cfg.probe.cache_dir)), cache_key(cfg))
    cached = {a: _layer_file(state_dir, a, p) for a, p in layers.items()}
    cached = {a: f for a, f in cached.items() if os.path.exists(f)}
    missing = {a: p for a, p in layers.items() if a not in cached}
    meta_path = os.path.join(state_dir, "meta.json")
    layout = str(cfg.model.get("layout", "cnn"))

    dataset = build_dataset(cfg.dataset, spec)
    chosen = choose_clips(dataset, cfg.probe.num_clips, str(cfg.probe.sampling), int(cfg.seed))
    if len(chosen) < len(dataset):
        dataset = Subset(dataset, chosen)
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
        )
        trainer = build_trainer(
            cfg.trainer,
            fixed={"use_distributed_sampler": False, "enable_checkpointing": False},
            task="task=probe",
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
        io.write_json(meta_path, {"skipped_clips": skipped})
    for alias, path in cached.items():
        results[alias] = PairStatistics.from_file(path, estimator=estimator).report(lam=lam)
    if skipped is None:
        skipped = 0
        if os.path.exists(meta_path):
            with open(meta_path) as fh:
                skipped = json.load(fh)["skipped_clips"]
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
            "key": os.path.basename(state_dir),
            "layers_from_cache": sorted(cached),
            "clips_run": clips_run,
        },
        "config": OmegaConf.to_container(cfg, resolve=True),
        "environment": io.environment(),
        "clips": [{"index": i, **clip_info(dataset, k)} for k, i in enumerate(_indices(dataset))],
    }
    return record, unit_scores, objects


def _indices(dataset: Any) -> list[int]:
    return (
        [int(i) for i in dataset.indices]
        if isinstance(dataset, Subset)
        else list(range(len(dataset)))
    )


def run(cfg: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``task=probe``: probe, then write results, figures and the log into the run directory."""
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    record, unit_scores, objects = probe(cfg)
    if not record:  # a non-zero rank of a multi-process run: rank 0 reports
        return record, objects
    folder = output_dir()
    figures = write_outputs(folder, record, unit_scores)
    log_results(build_logger(cfg.get("logger"), folder), record, figures)
    print(summary_table(record))
    print(f"results: {os.path.join(folder, 'results.json')}")
    objects["figures"] = figures
    return record, objects
