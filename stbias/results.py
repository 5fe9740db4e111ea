"""Results across runs: ``load(path_or_glob)`` reads any set of run directories into one table.

A run directory is any folder holding a ``results.json`` written by a task (``python run.py``
writes one into its Hydra run directory). ``load`` accepts a run directory, a ``results.json``,
a folder holding run directories at any depth (a ``python run.py -m ...`` sweep folder,
``outputs/``), a glob of any of these, or a list of them, and returns one pandas DataFrame:

* ``task=probe``: one row per run × layer — ``model``, ``dataset``, ``stylization``, ``seed``,
  ``weights``, ``lam``, ``layer``, ``pathway``, ``channels`` and the numbers of ``results.csv``
  (``scores_<factor>``, ``dims_<class>``, ``percent_<class>``, ``units_<class>``,
  ``n_pairs_<factor>``) with, when the run had ``probe.bootstrap > 0``, the interval bounds
  ``<number>_lo`` / ``<number>_hi``;
* ``task=probe`` over a checkpoint series (``probe.checkpoints``): the same rows for every
  checkpoint, with its ``step``, ``epoch`` and ``checkpoint``;
* ``task=quickstart``: the same rows for each model it trained and probed, with ``val_acc``;
* ``task=weights`` (``metric=asdt|selfconv``): one row per set of weights × layer
  (``weights_label``: the set's label in ``metric.compare``, ``checkpoint``, ``depth``, ``asdt``,
  ``asdt_scaled``, ``temporal_channels``, ...);
* ``task=train``: one row per run (``shuffle_frames``, ``val/acc``, ``checkpoint``, ...);
* any other task: one row of the record's top-level numbers and strings.

Every row also has ``run`` (the run directory) and ``task``; runs started by ``python run.py``
carry their command-line overrides (a multirun point: its sweep values too) both as
``overrides`` (``"metric.lam=0.3 seed=1"``) and as one column per overridden key
(``metric.lam``, ``trained_on``, ...; a key that is already a column keeps the record's own
value). ``task=compare`` runs hold no measurements of their own and give no rows. A
``results.json`` that cannot be read (not JSON, not an object, or a probe record whose layers are
not the probe's numbers) is skipped with one warning line naming it and listed in
``df.attrs["skipped"]``; so is, with ``check_arrays=True`` (the figure pipeline), a run holding a
damaged ``.npz`` file.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import yaml

from stbias.errors import StbiasError
from stbias.metrics.blobs import welch_ttest

log = logging.getLogger(__name__)

RESULTS = "results.json"
FACTORS = ("dynamic", "static")
DIM_CLASSES = ("dynamic", "static", "residual")
UNIT_CLASSES = ("dynamic", "static", "joint", "residual")
META = ("run", "task", "model", "dataset", "stylization", "seed", "weights", "weights_sha256")
# folders that never hold run directories
_SKIP_DIRS = {"checkpoints", "wandb", "csv", "lightning_logs", "__pycache__"}


def _natural(text: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _walk(folder: str) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS]
        if RESULTS in files:
            found.append(os.path.join(root, RESULTS))
    return found


def find_runs(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """The ``results.json`` files under ``paths`` (run directories, folders of runs, globs)."""
    if isinstance(paths, (str, os.PathLike)):
        items = [paths]
    elif isinstance(paths, Iterable) and not isinstance(paths, (bytes, Mapping)):
        items = list(paths)
    else:
        raise TypeError(
            f"give run directories, results.json files or globs as a str, a path or a list of "
            f"them; got {type(paths).__name__}"
        )
    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            raise TypeError(
                f"a run directory, results.json or glob is a str or a path; got "
                f"{type(item).__name__} {item!r:.60}"
            )
    if not items:
        raise StbiasError("no run directories given; give a run directory, a folder or a glob")
    found: list[str] = []
    for item in items:
        text = os.path.expanduser(os.fspath(item))
        pattern = glob.has_magic(text)
        matches = sorted(glob.glob(text, recursive=True)) if pattern else [text]
        if not matches or not any(os.path.exists(m) for m in matches):
            raise StbiasError(f"no such run directory or file: {text!r}")
        for match in matches:
            if os.path.isdir(match):
                found += _walk(match)
            elif os.path.basename(match) == RESULTS:
                found.append(match)
            elif os.path.isfile(match) and not pattern:
                raise StbiasError(
                    f"{match!r} is a file but not a {RESULTS}; give run directories or their "
                    f"{RESULTS}"
                )
    unique = {os.path.realpath(f): f for f in found}
    if not unique:
        raise StbiasError(
            f"no {RESULTS} under {', '.join(repr(os.fspath(i)) for i in items)}: not a run "
            "directory or a folder of runs (python run.py writes results.json into its run "
            "directory)"
        )
    return sorted(unique.values(), key=_natural)


def _value(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (int, float, str, bool)) or value is None else text


def sweep_overrides(run_dir: str) -> dict[str, Any]:
    """The command-line overrides of a run (Hydra's ``.hydra/overrides.yaml``), key -> value."""
    path = os.path.join(run_dir, ".hydra", "overrides.yaml")
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as fh:
            lines = yaml.safe_load(fh) or []
    except (OSError, yaml.YAMLError):
        return {}
    out = {}
    for line in lines:
        if not isinstance(line, str) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key = key.lstrip("+~")
        if key.startswith("hydra.") or key.startswith("hydra/"):
            continue
        out[key] = _value(value)
    return out


def _run_config(record: Mapping[str, Any], run_dir: str) -> dict[str, Any]:
    """The run's resolved config: the record's ``config``, else Hydra's ``.hydra/config.yaml``."""
    if isinstance(record.get("config"), Mapping):
        return dict(record["config"])
    path = os.path.join(run_dir, ".hydra", "config.yaml")
    try:
        with open(path) as fh:
            config = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError):
        return {}
    return config if isinstance(config, dict) else {}


def _weights_from_config(
    config: Mapping[str, Any] | None, checkpoint: Any = None, own_checkpoint: bool = True
) -> str:
    """``random``, ``pretrained:<source>`` or ``file:<path>``, as ``weights_record`` writes it."""
    model = (config or {}).get("model") or {}
    if own_checkpoint:
        checkpoint = checkpoint or model.get("checkpoint")
    if checkpoint:
        return f"file:{os.path.abspath(os.path.expanduser(str(checkpoint)))}"
    if model.get("pretrained"):
        return f"pretrained:{model.get('published_weights')}"
    return "random"


# what every layer entry of a probe record holds, as the probe writes it
PROBE_NUMBERS = {
    "scores": FACTORS,
    "dims": DIM_CLASSES,
    "percent": DIM_CLASSES,
    "units": UNIT_CLASSES,
}


class UnreadableRecord(ValueError):
    """A results record whose content is not what its task writes."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_probe_layers(layers: Any) -> None:
    """Raise :class:`UnreadableRecord` unless ``layers`` maps each layer to the probe's numbers."""
    if not isinstance(layers, Mapping):
        raise UnreadableRecord(f"'layers' is a {type(layers).__name__}, not an object")
    for layer, entry in layers.items():
        if not isinstance(entry, Mapping):
            raise UnreadableRecord(f"layer {layer!r} is a {type(entry).__name__}, not an object")
        for key, names in PROBE_NUMBERS.items():
            values = entry.get(key)
            if not isinstance(values, Mapping) or not all(_is_number(values.get(n)) for n in names):
                raise UnreadableRecord(
                    f"layer {layer!r}: {key!r} does not hold finite numbers for {', '.join(names)}"
                )


def probe_rows(record: Mapping[str, Any], meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per layer of a probe record's ``layers``, each starting with ``meta``."""
    rows = []
    for layer, entry in record.get("layers", {}).items():
        prefix = layer.split("_")[0]
        units = entry.get("units", {})
        row = {
            **meta,
            "lam": entry.get("lam", record.get("lam")),
            "metric": record.get("metric"),
            "estimator": entry.get("estimator"),
            "num_clips": record.get("num_clips"),
            "skipped_clips": record.get("skipped_clips"),
            "layer": layer,
            "pathway": prefix if prefix in ("slow", "fast", "fused") else "",
            "channels": sum(int(units.get(c, 0)) for c in UNIT_CLASSES) or None,
        }
        for key in ("scores", "dims", "percent", "units", "n_pairs"):
            row.update({f"{key}_{k}": v for k, v in (entry.get(key) or {}).items()})
        ci = entry.get("ci") or {}
        if ci:
            row["ci_level"] = ci.get("level")
            row["ci_replicates"] = ci.get("replicates")
        for key in ("scores", "dims", "percent", "units"):
            for name, (lo, hi) in (ci.get(key) or {}).items():
                row[f"{key}_{name}_lo"], row[f"{key}_{name}_hi"] = lo, hi
        rows.append(row)
    return rows


def _weights_rows(
    record: Mapping[str, Any], meta: dict[str, Any], config: Mapping[str, Any]
) -> list[dict[str, Any]]:
    runs = record.get("compare") or {
        record.get("run", "weights"): {
            "checkpoint": record.get("checkpoint"),
            "layers": record.get("layers", {}),
        }
    }
    rows = []
    for label, run in runs.items():
        checkpoint = run.get("checkpoint")
        for layer, values in run.get("layers", {}).items():
            row = {
                **meta,
                "weights": _weights_from_config(config, checkpoint, own_checkpoint=False),
                "weights_label": label,
                "checkpoint": checkpoint,
                "metric": record.get("metric"),
                "delta": record.get("delta"),
                "rule": record.get("rule"),
                "layer": layer,
            }
            for key, value in values.items():
                row[key] = "x".join(map(str, value)) if isinstance(value, list) else value
            rows.append(row)
    return rows


def _scalars(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in mapping.items()
        if isinstance(v, (int, float, str, bool)) or v is None
        if k not in ("config", "environment")
    }


def rows_of(record: Mapping[str, Any], run_dir: str) -> list[dict[str, Any]]:
    """The table rows of one run's ``results.json`` record (see the module docstring)."""
    task = record.get("task")
    overrides = sweep_overrides(run_dir)
    meta: dict[str, Any] = {"run": run_dir, "task": task}
    for key in META[2:]:
        if key in record:
            meta[key] = record[key]
    config = _run_config(record, run_dir)
    if "weights" not in meta and task in ("train", "weights"):
        meta["weights"] = _weights_from_config(config)
    if task == "compare":
        return []
    if task == "probe" and "series" in record:
        rows = []
        for entry in record["series"]:
            point = {k: entry.get(k) for k in ("step", "epoch", "checkpoint", "weights_sha256")}
            one = {
                **record,
                "layers": entry.get("layers", {}),
                "skipped_clips": entry.get("skipped_clips"),
            }
            rows += probe_rows(one, {**meta, **point})
    elif task == "probe":
        rows = probe_rows(record, meta)
    elif task == "quickstart":
        rows = []
        for model, sub in (record.get("results") or {}).items():
            sub_meta = {**meta, **{k: sub[k] for k in META[2:] if k in sub}, "model": model}
            acc = (sub.get("train") or {}).get("val/acc")
            rows += [{**r, "val/acc": acc} for r in probe_rows(sub, sub_meta)]
    elif task == "weights":
        rows = _weights_rows(record, meta, config)
    else:
        rows = [{**meta, **_scalars(record)}]
    if overrides:
        text = " ".join(f"{k}={v}" for k, v in overrides.items())
        for row in rows:
            row["overrides"] = text
            for key, value in overrides.items():
                row.setdefault(key, value)
    return rows


def _check_record(record: Mapping[str, Any]) -> None:
    """Raise :class:`UnreadableRecord` where a record's measurements are not its task's."""
    task = record.get("task")
    if task == "probe" and "series" in record:
        series = record["series"]
        if not isinstance(series, list) or not all(isinstance(e, Mapping) for e in series):
            raise UnreadableRecord("'series' is not a list of objects")
        for entry in series:
            check_probe_layers(entry.get("layers", {}))
    elif task == "probe":
        check_probe_layers(record.get("layers", {}))
    elif task == "quickstart":
        results = record.get("results") or {}
        if not isinstance(results, Mapping):
            raise UnreadableRecord("'results' is not an object")
        for model, sub in results.items():
            if not isinstance(sub, Mapping):
                raise UnreadableRecord(f"results of {model!r} is not an object")
            check_probe_layers(sub.get("layers", {}))


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """The record of one ``results.json``.

    Raises:
        UnreadableRecord: the file cannot be read, is not JSON, not an object, or (probe,
            quickstart) its layers do not hold the probe's numbers; the message says which.
    """
    try:
        with open(path) as fh:
            record = json.load(fh)
    except (OSError, ValueError) as err:
        raise UnreadableRecord(f"not a readable results file ({err})") from None
    if not isinstance(record, dict):
        raise UnreadableRecord(f"not a JSON object but a {type(record).__name__}")
    _check_record(record)
    return record


def damaged_arrays(run_dir: str) -> str | None:
    """The first ``.npz`` under ``run_dir`` that cannot be read in full, with why; else None."""
    for root, dirs, files in os.walk(run_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS)
        for name in sorted(files):
            if not name.endswith(".npz"):
                continue
            path = os.path.join(root, name)
            try:
                with np.load(path, allow_pickle=False) as data:
                    for key in data.files:
                        try:
                            data[key]
                        except ValueError as err:
                            if "allow_pickle" not in str(err):
                                raise  # else an object array: whole, but never unpickled
            except Exception as err:  # noqa: BLE001 - zip, header and pickle errors alike
                return f"{path}: {type(err).__name__}: {err}"
    return None


def load(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    tasks: Iterable[str] | None = None,
    check_arrays: bool = False,
) -> pd.DataFrame:
    """One DataFrame over every run under ``paths`` (see the module docstring for the rows).

    Args:
        paths: a run directory, a ``results.json``, a folder of runs (a multirun sweep folder),
            a glob (``outputs/**/fig*``), or a list of these.
        tasks: keep only runs of these tasks (e.g. ``["probe"]``, or one name).
        check_arrays: also skip a run whose folder holds an ``.npz`` file that cannot be read
            (for readers that open a run's arrays, as the figure targets do).

    Raises:
        StbiasError: a path that does not exist, or no ``results.json`` under any of them.
    """
    if isinstance(tasks, str):
        tasks = [tasks]
    if tasks is not None and not all(isinstance(t, str) for t in tasks):
        raise TypeError(f"tasks takes task names such as ['probe']; got {tasks!r:.60}")
    wanted = set(tasks) if tasks is not None else None
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for path in find_runs(paths):
        run_dir = os.path.dirname(os.path.abspath(path))
        try:
            record = read_record(path)
        except UnreadableRecord as err:
            log.warning("skipped %s: %s", path, err)
            skipped.append(path)
            continue
        if wanted is not None and record.get("task") not in wanted:
            continue
        damaged = damaged_arrays(run_dir) if check_arrays else None
        if damaged is not None:
            log.warning("skipped %s: a damaged array file, %s", path, damaged)
            skipped.append(path)
            continue
        try:
            found = rows_of(record, run_dir)
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            log.warning(
                "skipped %s: not a readable results file (%s: %s)", path, type(err).__name__, err
            )
            skipped.append(path)
            continue
        rows += found
    frame = pd.DataFrame(rows)
    if not frame.empty:
        first = [c for c in (*META, "weights_label", "lam", "layer") if c in frame.columns]
        frame = frame[first + [c for c in frame.columns if c not in first]]
    frame.attrs["skipped"] = skipped
    return frame


def shuffled_drops(table: pd.DataFrame, dataset_column: str = "dataset") -> pd.DataFrame:
    """Kowal et al.'s shuffled-frame drop from training runs: one row per (model, dataset).

    Pairs each standard ``task=train`` run with the shuffled-frame run
    (``train.shuffle_frames=true``) of the same model, dataset and seed and returns ``acc_std``,
    ``acc_shuf`` (final ``val/acc``) and ``drop = (acc_std - acc_shuf) / acc_std``.

    Raises:
        StbiasError: a pair that is incomplete, repeated, or whose two runs did not start from
            the same weights (``init_checksum``).
    """
    rows = table[table["task"] == "train"] if "task" in table.columns else table
    for column in (dataset_column, "shuffle_frames", "val/acc"):
        if column not in rows.columns:
            raise StbiasError(
                f"no column {column!r} in the training runs; the shuffled-frame drop needs "
                "task=train runs with and without train.shuffle_frames=true"
            )
    out = []
    keys = ["model", dataset_column, "seed"]
    for key, part in rows.groupby(keys, sort=False):
        what = ", ".join(f"{k}={v}" for k, v in zip(keys, key))
        std = part[~part["shuffle_frames"].astype(bool)]
        shuf = part[part["shuffle_frames"].astype(bool)]
        if len(std) != 1 or len(shuf) != 1:
            raise StbiasError(
                f"{what}: {len(std)} standard and {len(shuf)} shuffled-frame runs; the drop "
                "needs exactly one of each"
            )
        std, shuf = std.iloc[0], shuf.iloc[0]
        if "init_checksum" in part and std.get("init_checksum") != shuf.get("init_checksum"):
            raise StbiasError(
                f"{what}: the standard and shuffled-frame runs started from different weights "
                f"(init_checksum {std.get('init_checksum')} vs {shuf.get('init_checksum')}); "
                "give both the same seed and model.checkpoint"
            )
        acc_std, acc_shuf = float(std["val/acc"]), float(shuf["val/acc"])
        if acc_std <= 0:
            raise StbiasError(f"{what}: standard training reached val/acc 0; no relative drop")
        out.append(
            {
                "model": key[0],
                "dataset": key[1],
                "seed": key[2],
                "weights": std.get("weights"),
                "acc_std": acc_std,
                "acc_shuf": acc_shuf,
                "drop": (acc_std - acc_shuf) / acc_std,
                "run_std": std["run"],
                "run_shuf": shuf["run"],
            }
        )
    if not out:
        raise StbiasError("no training runs to compare (task=train)")
    return pd.DataFrame(out)


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
        ci = entry.get("ci") or {}
        if ci:
            row["ci_level"], row["ci_replicates"] = ci.get("level"), ci.get("replicates")
        # every interval of results.json: scores, dims, percent and unit counts
        for key in ("scores", "dims", "percent", "units"):
            for name, (lo, hi) in (ci.get(key) or {}).items():
                row[f"{key}_{name}_lo"], row[f"{key}_{name}_hi"] = lo, hi
        rows.append(row)
    return rows


# --- explanation runs: the samples of their t-tests, Tables 3 and 4 of several runs -------------


def _welch(values: Mapping[str, np.ndarray], key: str) -> dict[str, Any]:
    runs = list(values)
    return welch_ttest(values[runs[0]][key], values[runs[1]][key])


def mask_samples(run_dir: str) -> dict[str, np.ndarray]:
    """The per-clip samples a temporal-mask run's t-tests use, from its ``masks.npz``."""
    with np.load(os.path.join(run_dir, "masks.npz")) as data:
        kept = data["drop_ratio_kept"].astype(bool)
        return {
            "mask_length": data["length"].astype(np.float64),
            "drop_ratio": data["drop_ratio"][kept],
            "drop_difference": data["drop_difference"],
        }


def blob_samples(run_dir: str) -> dict[str, np.ndarray]:
    """Per-frame counts and per-blob sizes and distances of a Grad-CAM run, from ``blobs.npz``."""
    with np.load(os.path.join(run_dir, "blobs.npz")) as data:
        return {
            "blob_count": data["counts"].ravel().astype(np.float64),
            "blob_size": data["size"],
            "center_distance": data["distance"],
        }


# the samples each explanation task's t-tests use, read from its run folder
SAMPLES = {"temporal_mask": mask_samples, "gradcam": blob_samples}


def explanation_statistics(
    runs: Mapping[str, str], task: str, measures: Iterable[str]
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Tables 3 and 4 of Mänttäri et al. from run folders (label -> folder of a ``task`` run):
    each run's summary (from its ``results.json``) and, for two runs, a Welch t-test per measure
    on the runs' samples (``None`` otherwise).
    """
    if task not in SAMPLES:
        raise StbiasError(
            f"no explanation statistics for task {task!r}; valid: {', '.join(SAMPLES)}"
        )
    summaries = {
        label: read_record(os.path.join(d, "results.json"))["summary"] for label, d in runs.items()
    }
    if len(runs) != 2:
        return summaries, None
    samples = {label: SAMPLES[task](d) for label, d in runs.items()}
    return summaries, {key: _welch(samples, key) for key in measures}


def center_bias_arrays(run_dir: str) -> dict[str, np.ndarray]:
    """The mean foreground mask of every dataset of a run's ``center_bias.npz`` (dataset -> map);
    one line naming the file if it cannot be read."""
    path = os.path.join(run_dir, "center_bias.npz")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key.split("/")[0]: npz[key] for key in npz.files if key.endswith("/map")}
    except Exception as err:  # noqa: BLE001 - zip, header and pickle errors alike
        raise StbiasError(f"{path} cannot be read ({type(err).__name__}: {err})") from None


def load_records(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> tuple[list, int]:
    """``results.json`` of run directories (or globs of them, or of the files themselves).

    Returns:
        The records, each with ``run_dir`` added, and the number of files that could not be read
        (skipped and counted, never fatal).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[str] = []
    for path in paths:
        path = os.fspath(path)
        matches = sorted(glob.glob(path)) or [path]
        for match in matches:
            files.append(match if match.endswith(".json") else os.path.join(match, "results.json"))
    records, skipped = [], 0
    for file in dict.fromkeys(files):
        try:
            with open(file) as fh:
                record = json.load(fh)
        except (OSError, ValueError) as err:
            log.warning("skipped %s (%s)", file, err)
            skipped += 1
            continue
        if not isinstance(record, dict):
            skipped += 1
            continue
        record["run_dir"] = os.path.dirname(os.path.abspath(file))
        records.append(record)
    return records, skipped


def static_dropout_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a StaticDropout study's ``static_dropout.csv`` (numbers as floats, ``mode`` as
    text)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for row in rows:
        parsed: dict[str, Any] = {}
        for key, value in row.items():
            try:
                parsed[key] = float(value) if key != "mode" and value != "" else value
            except ValueError:
                parsed[key] = value
        out.append(parsed)
    return out
