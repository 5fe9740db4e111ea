"""``task=probe`` over a checkpoint series (``probe.checkpoints``): bias over training.

Every checkpoint of one run is probed in one process on the same clips (built once), each through
:func:`stbias.tasks.probe.probe` and so through its cache: a checkpoint probed before is read back
without a forward pass. Writes into the run directory ``results.csv`` (one row per step, epoch and
layer), ``settling.csv`` (per layer, the fraction of training after which the shares stay within
10 % of their final values), ``results.json`` and ``bias_over_training.{png,pdf}``.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from omegaconf import OmegaConf, open_dict

from stbias import io
from stbias.errors import StbiasError
from stbias.lit.series import resolve_series
from stbias.models.inputs import InputSpec
from stbias.plotting import save_figure
from stbias.plotting.bias_over_training import bias_over_training
from stbias.results import layer_rows
from stbias.tasks.dataset_setup import choose_probe_clips
from stbias.tasks.loggers import build_logger, finish_logger, run_identity
from stbias.tasks.model_setup import apply_checkpoint_settings, checkpoint_settings
from stbias.tasks.record import joined, write_results
from stbias.tasks.run_config import check_results, choice, output_dir, plain

# the probe of one model on chosen clips: (cfg, clips=...) -> (record, unit scores, objects)
ProbeOne = Callable[..., tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]

log = logging.getLogger(__name__)
SETTLE_TOLERANCE = 0.1
SHARES = ("dynamic", "static")


def series_rows(record: Mapping[str, Any], position: Mapping[str, Any], last_step: int) -> list:
    """The results.csv rows of one checkpoint: its step, epoch and progress, then the layer row."""
    meta = {
        "step": position["step"],
        "epoch": position["epoch"],
        "progress": position["step"] / last_step if last_step else 0.0,
        "checkpoint": position["path"],
        **{k: record[k] for k in ("model", "dataset", "stylization", "seed", "weights_sha256")},
    }
    rows = layer_rows(record["layers"], meta)
    for row in rows:
        ci = (record["layers"][row["layer"]].get("ci") or {}).get("scores", {})
        for factor, (lo, hi) in ci.items():
            row[f"scores_{factor}_lo"], row[f"scores_{factor}_hi"] = lo, hi
    return rows


def settling(
    rows: Sequence[Mapping[str, Any]], tolerance: float = SETTLE_TOLERANCE
) -> list[dict[str, Any]]:
    """Per layer, the fraction of training after which each share stays near its final value.

    For the dynamic and static shares (``percent_*``) and raw scores (``scores_*``): the smallest
    ``step / last step`` from which on every checkpoint lies within ``tolerance`` (relative) of
    the last checkpoint's value. ``settle`` is the later of the two shares.
    """
    layers = list(dict.fromkeys(str(r["layer"]) for r in rows))
    out = []
    for layer in layers:
        series = sorted((r for r in rows if str(r["layer"]) == layer), key=lambda r: int(r["step"]))
        last = int(series[-1]["step"])
        entry: dict[str, Any] = {"layer": layer, "checkpoints": len(series), "last_step": last}
        for key in [f"percent_{s}" for s in SHARES] + [f"scores_{s}" for s in SHARES]:
            values = [float(r[key]) for r in series]
            final = values[-1]
            settled_at = len(values) - 1
            while settled_at > 0 and abs(values[settled_at - 1] - final) <= tolerance * abs(final):
                settled_at -= 1
            entry[f"settle_{key}"] = int(series[settled_at]["step"]) / last if last else 0.0
            entry[f"final_{key}"] = final
        entry["settle"] = max(entry[f"settle_percent_{s}"] for s in SHARES)
        out.append(entry)
    return out


def _check_settings(cfg: Any, positions: Sequence[Mapping[str, Any]]) -> None:
    if cfg.model.get("checkpoint"):
        raise StbiasError(
            f"probe.checkpoints and model.checkpoint={cfg.model.checkpoint} are both set; "
            "a series takes its weights from probe.checkpoints (leave model.checkpoint unset)"
        )
    first = checkpoint_settings(positions[0]["path"])
    for position in positions[1:]:
        if checkpoint_settings(position["path"]) != first:
            raise StbiasError(
                f"checkpoint {position['path']} was trained with other model settings than "
                f"{positions[0]['path']}; probe.checkpoints takes the checkpoints of one run"
            )


def _log(logger: Any, series: Sequence[Mapping[str, Any]]) -> None:
    """Each checkpoint's per-layer values at its training step (a real series), then close."""
    if logger:
        try:
            for entry in series:
                metrics = {}
                for layer, e in entry["layers"].items():
                    for cls, value in e["percent"].items():
                        metrics[f"probe/{cls}_pct/{layer}"] = value
                    for factor, value in e["scores"].items():
                        metrics[f"probe/{factor}_score/{layer}"] = value
                logger.log_metrics(metrics, step=int(entry["step"]))
        except Exception as err:  # noqa: BLE001 - logging must never lose a finished run
            log.warning(
                "could not log to %s (%s: %s)", type(logger).__name__, type(err).__name__, err
            )
    finish_logger(logger)


def probe_series(cfg: Any, probe: ProbeOne) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Probe every checkpoint of ``probe.checkpoints`` with ``probe`` (the probe task's own probe
    of one model, :func:`stbias.tasks.probe.probe`); returns the record and the CSV rows."""
    positions = resolve_series(plain(cfg.probe.checkpoints))
    _check_settings(cfg, positions)
    configs = []
    for position in positions:
        one = copy.deepcopy(cfg)
        with open_dict(one):
            one.model.checkpoint = position["path"]
            one.probe.checkpoints = None
        configs.append(one)
    apply_checkpoint_settings(configs[0])
    clips = choose_probe_clips(configs[0], InputSpec.from_dict(plain(configs[0].model.input)))
    last_step = positions[-1]["step"]
    series, rows = [], []
    first_record: dict[str, Any] = {}
    for position, one in zip(positions, configs):
        record, _, _ = probe(one, clips=clips)
        if not record:  # a non-zero rank of a multi-process run
            continue
        first_record = first_record or record
        series.append(
            {
                "step": position["step"],
                "epoch": position["epoch"],
                "checkpoint": position["path"],
                "weights_sha256": record["weights_sha256"],
                "layers": record["layers"],
                "cache": record["cache"],
                "skipped_clips": record["skipped_clips"],
            }
        )
        rows += series_rows(record, position, last_step)
    if not series:
        return {}, []
    record = {
        "task": "probe",
        "series": series,
        "settling": settling(rows),
        "settle_tolerance": SETTLE_TOLERANCE,
        **{
            k: first_record[k]
            for k in ("model", "dataset", "stylization", "seed", "num_clips", "metric", "lam")
        },
        "weights": joined(f"file:{entry['checkpoint']}" for entry in series),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "environment": io.environment(),
        "clips": first_record["clips"],
    }
    return record, rows


def summary(record: Mapping[str, Any]) -> str:
    """Per checkpoint and layer the split, then the settling fractions."""
    lines = [
        f"{record['model']} on {record['dataset']}: {len(record['series'])} checkpoints, "
        f"{record['num_clips']} clips, λ = {record['lam']}",
        f"{'step':>7} {'epoch':>5} {'layer':<12} {'S_dyn':>7} {'S_stat':>7} {'dyn%':>6} "
        f"{'stat%':>6} {'res%':>6}  cache",
    ]
    for entry in record["series"]:
        cached = "cached" if entry["cache"]["clips_run"] == 0 else "probed"
        for layer, e in entry["layers"].items():
            lines.append(
                f"{entry['step']:>7} {entry['epoch']:>5} {layer:<12} "
                f"{e['scores']['dynamic']:7.3f} {e['scores']['static']:7.3f} "
                f"{e['percent']['dynamic']:6.1f} {e['percent']['static']:6.1f} "
                f"{e['percent']['residual']:6.1f}  {cached}"
            )
    lines.append(
        f"fraction of training after which the shares stay within "
        f"{100 * record['settle_tolerance']:.0f} % of their final values:"
    )
    for s in record["settling"]:
        lines.append(
            f"  {s['layer']:<12} dynamic {s['settle_percent_dynamic']:.2f}  "
            f"static {s['settle_percent_static']:.2f}  (S_dyn {s['settle_scores_dynamic']:.2f}, "
            f"S_stat {s['settle_scores_static']:.2f})"
        )
    return "\n".join(lines)


def run_series(cfg: Any, probe: ProbeOne) -> tuple[dict[str, Any], dict[str, Any]]:
    """Probe the series, write its results and figure, print the summary."""
    record, rows = probe_series(cfg, probe)
    if not record:
        return record, {}
    folder = output_dir()
    check_results(record, "task=probe (a checkpoint series)")
    io.write_csv(os.path.join(folder, "results.csv"), rows)
    io.write_csv(os.path.join(folder, "settling.csv"), record["settling"])
    io.write_csv(os.path.join(folder, "clips.csv"), record.pop("clips"))
    write_results(folder, record, cfg)
    title = f"{record['model']} on {record['dataset']} over training, λ = {record['lam']}"
    figures = save_figure(
        bias_over_training(rows, title=title), os.path.join(folder, "bias_over_training")
    )
    identity = run_identity("probe_series", record["model"], record["dataset"])
    _log(build_logger(cfg.get("logger"), folder, **identity), record["series"])
    log.info("%s", summary(record))
    log.info("results: %s", os.path.join(folder, "results.csv"))
    return record, {"rows": rows, "figures": figures, "model": choice(cfg, "model")}
