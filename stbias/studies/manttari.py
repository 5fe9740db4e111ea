"""`experiment=manttari` (task=manttari): Mänttäri et al.'s I3D vs ConvLSTM study on one dataset.

For every model of ``task.models`` (label -> model option, builder changes, Grad-CAM layers):

1. train it on ``dataset`` at ``task.input`` (``task=train`` with ``task.train``; once: the run is
   cached under ``task.cache_dir/<label>-<key>``, the key hashing every setting), unless
   ``task.checkpoints.<label>`` names a checkpoint of it: that one is explained as it is;
   With ``task.precise_bn_batches > 0`` the batch-norm statistics are then recomputed over that
   many training batches with the final weights (:func:`precise_batch_norm`), since everything
   below runs in eval mode;
2. Table 1: top-1 accuracy and macro F1 on ``task.eval_clips`` held-out clips
   (``task.eval_split``) in order and with every clip's frames reversed;
3. ``metric=temporal_mask`` and ``metric=gradcam`` (once per layer of ``layers``) on held-out
   clips, with the settings of ``task.temporal_mask`` / ``task.gradcam``, each writing its own
   run folder ``<run>/<label>/temporal_mask`` and ``<run>/<label>/gradcam_<layer>``.

Then Table 4 (mask length, drop ratio, drop difference) and one Table 3 per layer position
(blob count, size, centre distance), each with Welch t-tests between the first two models, and
``table1.csv``, ``table3*.csv``, ``table4.csv``, their figures and ``results.json`` in the run
directory. :func:`redraw` draws the tables again from that folder's files.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from filelock import FileLock
from omegaconf import open_dict
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.data import DataLoader
from torchmetrics.functional.classification import multiclass_f1_score

from stbias import io
from stbias.config import option_node
from stbias.data import video_to_float
from stbias.errors import StbiasError
from stbias.models.inputs import InputSpec, pack_inputs
from stbias.plotting import save_figure
from stbias.plotting.explain import (
    DIGITS,
    TABLE3,
    TABLE4,
    draw_table,
    table1,
    table3,
    table4,
    table_rows,
)
from stbias.plotting.manttari import fig4, table2
from stbias.results import blob_samples, explanation_statistics, mask_samples
from stbias.studies import base
from stbias.studies.base import label_of, read_run, run_dirs, sub_run, train_run
from stbias.tasks.dataset_setup import build_dataset
from stbias.tasks.gradcam import explain_gradcam
from stbias.tasks.loggers import publish, record_config
from stbias.tasks.model_setup import apply_checkpoint_settings, build_model
from stbias.tasks.record import joined, write_results
from stbias.tasks.run_config import choice, output_dir, plain
from stbias.tasks.temporal_mask import explain_masks

log = logging.getLogger(__name__)


def model_node(cfg: Any, entry: Any) -> Any:
    """The model config of one entry of ``task.models``: its option, builder changes, input."""
    node = option_node("model", str(entry.model))
    with open_dict(node):
        for key, value in (plain(entry.get("builder")) or {}).items():
            node.builder[key] = value
        for key, value in plain(cfg.task.input).items():
            node.input[key] = value
    return node


def _sub_config(cfg: Any, defaults: list[str], model: Any) -> Any:
    """A sub-run on this study's dataset with ``defaults`` picked and ``model``."""
    return sub_run(cfg, {"defaults": defaults, "model": model, "dataset": cfg.dataset})


def train_config(cfg: Any, model: Any) -> Any:
    """The ``task=train`` config of one model."""
    t = cfg.task.train
    return train_run(
        cfg,
        {
            "model": model,
            "dataset": cfg.dataset,
            "dataset.split": "train",
            "dataset.num_samples": int(t.clips),
            "train.label_key": str(t.label_key),
            "train.num_classes": t.num_classes,
        },
    )


def ensure_trained(cfg: Any, label: str, model: Any) -> dict[str, Any]:
    """Train one model once: ``<task.cache_dir>/<label>-<key>/`` (resumes an interrupted run)."""
    return base.ensure_trained(cfg, label, train_config(cfg, model), f"{label} ({model.name})")


def precise_batch_norm(network: torch.nn.Module, batches: Any, spec: InputSpec) -> int:
    """Recompute every batch norm's running statistics with the final weights ("precise BN").

    The statistics are reset and averaged with equal weight (``momentum=None``) over the
    training-mode forward passes of ``batches`` (sample dicts with ``video``); weights are not
    touched. A short training leaves the running averages far behind a network whose weights still
    move fast, and eval mode — which the explanations need, so that no clip's result depends on
    another's — would then explain a network that classifies worse than the one trained.

    Returns:
        The number of batch-norm layers recomputed.
    """
    layers = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
    network.train()
    try:
        with torch.no_grad():
            for batch in batches:
                network(pack_inputs(video_to_float(batch["video"]), spec))
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        network.eval()
    return len(layers)


def ensure_precise_bn(cfg: Any, model: Any, trained: dict[str, Any]) -> str:
    """``precise_bn.ckpt`` beside a trained run's checkpoint: the same, with precise BN statistics.

    Computed once (over ``task.precise_bn_batches`` training batches) and reused; the file keeps
    the Lightning checkpoint's layout and ``hyper_parameters``, so ``model.checkpoint=<it>``
    rebuilds the trained network.
    """
    source = str(trained["checkpoint"])
    target = os.path.join(os.path.dirname(source), "precise_bn.ckpt")
    batches = int(cfg.task.precise_bn_batches)
    with FileLock(target + ".lock"):
        if os.path.isfile(target):
            return target
        sub = _sub_config(cfg, [], trained_model(cfg, model, source))
        apply_checkpoint_settings(sub)
        spec = InputSpec.from_dict(plain(sub.model.input))
        network = build_model(sub.model)
        t = cfg.task.train
        dataset = build_dataset(sub.dataset, spec, split="train", num_samples=int(t.clips))
        loader = DataLoader(
            dataset,
            batch_size=int(t.batch_size),
            shuffle=True,
            generator=torch.Generator().manual_seed(int(cfg.seed)),
        )
        chosen = [b for _, b in zip(range(batches), loader)]
        precise_batch_norm(network, chosen, spec)
        checkpoint = io.load_tensors(source, what="checkpoint")
        state = checkpoint["state_dict"]
        for key, value in network.state_dict().items():
            if f"model.{key}" not in state:
                raise StbiasError(f"{source} has no entry model.{key}; cannot write precise BN")
            state[f"model.{key}"] = value
        io.torch_save(checkpoint, target)
    return target


def trained_model(cfg: Any, model: Any, checkpoint: str) -> Any:
    """``model`` pointed at ``checkpoint`` (its builder and input set as it was trained)."""
    node = copy.deepcopy(model)
    with open_dict(node):
        node.checkpoint = checkpoint
    return node


def reversed_accuracy(cfg: Any, model: Any, label_key: str) -> dict[str, Any]:
    """Table 1 of one trained model: top-1 and macro F1 in order and with frames reversed."""
    sub = _sub_config(cfg, [], model)
    apply_checkpoint_settings(sub)
    spec = InputSpec.from_dict(plain(sub.model.input))
    network = build_model(sub.model).eval()
    classes = int(sub.model.builder.num_classes)
    dataset = build_dataset(
        sub.dataset, spec, split=str(cfg.task.eval_split), num_samples=int(cfg.task.eval_clips)
    )
    labels, normal, rev = [], [], []
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=int(cfg.task.train.batch_size)):
            clips = video_to_float(batch["video"])
            labels.append(torch.as_tensor(batch[label_key]))
            normal.append(network(pack_inputs(clips, spec)).argmax(-1))
            rev.append(network(pack_inputs(clips.flip(2), spec)).argmax(-1))
    y, a, b = (torch.cat(v) for v in (labels, normal, rev))

    def f1(pred: torch.Tensor) -> float:
        return float(multiclass_f1_score(pred, y, num_classes=classes, average="macro"))

    names = [str(c) for c in (getattr(dataset, "classes", None) or [])]
    per_class = multiclass_f1_score(a, y, num_classes=classes, average=None)
    return {
        # Table 2: F1 per class (in order), with the class names where the dataset has them
        "f1_per_class": [float(v) for v in per_class],
        "support": [int((y == c).sum()) for c in range(classes)],
        "classes": names if len(names) == classes else [str(c) for c in range(classes)],
        "clips": int(len(y)),
        "acc": float((a == y).double().mean()),
        "acc_reversed": float((b == y).double().mean()),
        "f1": f1(a),
        "f1_reversed": f1(b),
        "chance": 1.0 / classes,
    }


def explanation_config(cfg: Any, metric: str, model: Any, settings: Any) -> Any:
    """``metric=<metric>`` on ``model`` with the held-out split and ``settings``."""
    sub = _sub_config(cfg, [f"metric={metric}"], model)
    with open_dict(sub):
        sub.dataset.split = str(cfg.task.eval_split)
        for key, value in (plain(settings) or {}).items():
            (sub.probe if key in sub.probe else sub.metric)[key] = value  # clips: probe.*
    return sub


def _table_rows(summaries: dict[str, Any], tests: Any, columns) -> list[dict[str, Any]]:
    rows = []
    for label, summary in summaries.items():
        row: dict[str, Any] = {"model": label}
        for key, _ in columns:
            entry = summary.get(key) or {}
            row.update({f"{key}_{s}": entry.get(s) for s in ("mean", "std", "n")})
            lo_hi = entry.get("ci") or [None, None]
            row[f"{key}_ci_lo"], row[f"{key}_ci_hi"] = lo_hi
        rows.append(row)
    if tests:
        row = {"model": "welch_t_test"}
        for key, _ in columns:
            test = tests.get(key) or {}
            row[f"{key}_p"] = test.get("p")
            row[f"{key}_n"] = "/".join(str(n) for n in test.get("n", []))
        rows.append(row)
    return rows


def user_checkpoints(cfg: Any) -> dict[str, str]:
    """``task.checkpoints``: model label -> a checkpoint of that model to explain as it is.

    A model with a checkpoint is not trained (``task.checkpoints.i3d=<ckpt>``: the key is an
    entry's label in any case or its model option, e.g. ``clstm``); the file is a ``task=train``
    checkpoint or a state dict of the entry's model (its builder and input).
    """
    given = {str(k): v for k, v in (plain(cfg.task.get("checkpoints")) or {}).items() if v}
    # a key names an entry by its label (any case: i3d, c-lstm) or by its model option (clstm)
    names = {}
    for label, entry in cfg.task.models.items():
        names[str(label).lower()] = str(label)
        names.setdefault(str(entry.model).lower(), str(label))
    chosen: dict[str, str] = {}
    for key, path in given.items():
        label = names.get(key.lower())
        if label is None:
            raise StbiasError(
                f"task.checkpoints.{key}: no model {key!r} in task.models; valid keys: "
                f"{', '.join(sorted(set(names)))}"
            )
        if label in chosen:
            raise StbiasError(f"task.checkpoints names model {label!r} twice")
        if not os.path.isfile(str(path)):
            raise StbiasError(f"task.checkpoints.{key}={path}: no such file")
        chosen[label] = os.path.abspath(str(path))
    return chosen


def run(cfg: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train, measure Table 1, explain, and write Tables 1, 3 and 4."""
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    folder = output_dir()
    entries = cfg.task.models
    if not entries or len(entries) < 1:
        raise StbiasError(
            "task.models lists no model; give label: {model: <option>, layers: [...]}"
        )
    positions = {len(e.get("layers") or []) for e in entries.values()}
    if len(positions) != 1 or 0 in positions:
        raise StbiasError(
            "every entry of task.models needs the same number of Grad-CAM layers (position k of "
            f"each list forms Table 3 number k); got {[list(e.layers) for e in entries.values()]}"
        )
    label_key = str(cfg.task.train.label_key)
    dataset = choice(cfg, "dataset")
    runs: dict[str, dict[str, Any]] = {}
    given = user_checkpoints(cfg)
    for label, entry in entries.items():
        label = str(label)
        model = model_node(cfg, entry)
        if label in given:
            # the user's model as it is: no training, no batch-norm recomputation
            trained = {"checkpoint": given[label], "user_checkpoint": True}
            checkpoint = given[label]
            log.info("%s: the given checkpoint %s (nothing trained)", label, checkpoint)
        else:
            trained = ensure_trained(cfg, label, model)
            checkpoint = trained["checkpoint"]
            if int(cfg.task.precise_bn_batches) > 0:
                checkpoint = ensure_precise_bn(cfg, model, trained)
        model = trained_model(cfg, model, checkpoint)
        accuracy = reversed_accuracy(cfg, model, label_key)
        log.info(
            "%s: top-1 %.3f, reversed %.3f (training's last val/acc, running batch-norm "
            "averages: %s)",
            label,
            accuracy["acc"],
            accuracy["acc_reversed"],
            trained.get("val/acc"),
        )
        below = os.path.join(folder, label)
        sub = explanation_config(cfg, "temporal_mask", model, cfg.task.temporal_mask)
        record, _ = explain_masks(sub, os.path.join(below, "temporal_mask"))
        masks = {"dir": os.path.join(below, "temporal_mask"), "summary": record.get("summary")}
        cams = []
        for layer in entry.layers:
            sub = explanation_config(cfg, "gradcam", model, cfg.task.gradcam)
            with open_dict(sub):
                sub.layer = str(layer)
            where = os.path.join(below, f"gradcam_{layer}")
            record, _ = explain_gradcam(sub, where)
            cams.append({"layer": str(layer), "dir": where, "summary": record.get("summary")})
        runs[label] = {
            "model": str(entry.model),
            "train": {
                k: trained.get(k)
                for k in ("val/acc", "checkpoint", "minutes", "epochs", "user_checkpoint")
                if k in trained
            },
            "explained_checkpoint": checkpoint,
            "table1": accuracy,
            "temporal_mask": masks,
            "gradcam": cams,
        }
    if rank_zero_only.rank != 0:
        return {}, {}
    record = write_tables(folder, dataset, runs, cfg)
    publish(
        cfg.get("logger"),
        folder,
        "manttari",
        record["model"],
        dataset,
        config=record_config(record),
    )
    return record, {"dir": folder}


def write_tables(
    folder: str,
    dataset: str,
    runs: dict[str, dict[str, Any]],
    cfg: Any = None,
    previous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Tables 1, 3 (one per layer position) and 4 with t-tests; results.json; prints them.

    Args:
        cfg: the study's config (its seed, settings and config go into the record).
        previous: the record drawn again by :func:`redraw` (its header is kept).
    """
    names = {label: f"{label} ({dataset})" for label in runs}
    rows1 = [{"model": names[label], **r["table1"]} for label, r in runs.items()]
    io.write_csv(os.path.join(folder, "table1.csv"), rows1)
    save_figure(table1(rows1), os.path.join(folder, "table1"))
    mask_dirs = {names[label]: r["temporal_mask"]["dir"] for label, r in runs.items()}
    summaries4, tests4 = explanation_statistics(mask_dirs, "temporal_mask", [k for k, _ in TABLE4])
    save_figure(table4(summaries4, tests4), os.path.join(folder, "table4"))
    io.write_csv(os.path.join(folder, "table4.csv"), _table_rows(summaries4, tests4, TABLE4))
    tables3 = []
    count = len(next(iter(runs.values()))["gradcam"])
    for k in range(count):
        dirs = {
            f"{names[label]} {r['gradcam'][k]['layer']}": r["gradcam"][k]["dir"]
            for label, r in runs.items()
        }
        stem = "table3" if k == 0 else f"table3_{k + 1}"
        title = "Table 3: Grad-CAM blob statistics" + ("" if k == 0 else f", layer set {k + 1}")
        summaries3, tests3 = explanation_statistics(dirs, "gradcam", [k for k, _ in TABLE3])
        save_figure(table3(summaries3, tests3, title=title), os.path.join(folder, stem))
        io.write_csv(os.path.join(folder, f"{stem}.csv"), _table_rows(summaries3, tests3, TABLE3))
        tables3.append({"stem": stem, "runs": dirs, "summaries": summaries3, "tests": tests3})
    kept = ("seed", "settings", "config", "environment")
    record = {
        **{k: previous[k] for k in kept if k in (previous or {})},
        "task": "manttari",
        "model": joined(runs),
        "dataset": dataset,
        "weights": joined(
            f"file:{r['explained_checkpoint']}" if r.get("explained_checkpoint") else None
            for r in runs.values()
        ),
        "runs": runs,
        "tables": {
            "table4": {"runs": mask_dirs, "summaries": summaries4, "tests": tests4},
            "table3": tables3,
        },
    }
    write_results(folder, record, cfg)
    log.info("%s", format_tables(record))
    log.info("results: %s", os.path.join(folder, "results.json"))
    return record


def _fmt(entry: dict[str, Any] | None, digits: int = 2) -> str:
    if not entry or entry.get("mean") is None:
        return "–"
    ci = entry.get("ci")
    interval = f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else ""
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}{interval} (n={entry['n']})"


def _fmt_test(test: dict[str, Any] | None) -> str:
    if not test or test.get("p") is None:
        return "–"
    return f"p={test['p']:.2g} (n={test['n'][0]}/{test['n'][1]})"


def format_tables(record: dict[str, Any]) -> str:
    """The three tables as text: mean ± std [95 % interval of the mean] (n), t-test p (n)."""
    lines = ["Table 1: top-1 / macro F1 in order and reversed"]
    for label, r in record["runs"].items():
        t = r["table1"]
        lines.append(
            f"  {label:<8} top-1 {t['acc']:.3f}  rev. {t['acc_reversed']:.3f}   "
            f"F1 {t['f1']:.3f}  rev. {t['f1_reversed']:.3f}   ({t['clips']} clips, "
            f"chance {t['chance']:.2f})"
        )
    tables = record["tables"]
    for title, table, columns in [("Table 4: temporal masks", tables["table4"], TABLE4)] + [
        (f"Table 3 ({t['stem']}): Grad-CAM blobs", t, TABLE3) for t in tables["table3"]
    ]:
        lines.append(title)
        for label, summary in table["summaries"].items():
            cells = "; ".join(
                f"{name} {_fmt(summary.get(key), DIGITS.get(key, 2))}" for key, name in columns
            )
            lines.append(f"  {label}: {cells}")
        if table.get("tests"):
            cells = "; ".join(
                f"{name} {_fmt_test(table['tests'].get(key))}" for key, name in columns
            )
            lines.append(f"  Welch t-test: {cells}")
    return "\n".join(lines)


def redraw(folder: str) -> dict[str, Any]:
    """Tables 1, 3 and 4 of an ``experiment=manttari`` run folder, drawn again from its files."""
    path = os.path.join(folder, "results.json")
    if not os.path.isfile(path):
        raise StbiasError(f"{folder} holds no results.json of an experiment=manttari run")
    record = read_run(folder)
    if record.get("task") != "manttari":
        raise StbiasError(
            f"{path} is not an experiment=manttari result (task={record.get('task')})"
        )
    return write_tables(folder, record["dataset"], record["runs"], previous=record)


# Paper figures (stbias.figures): Tables 1-4 and Fig. 4 drawn from the runs' records -----------


def _manttari_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    return [read_run(run) for run in run_dirs(table, "manttari")]


def _relabel(summaries: Mapping[str, Any], dataset: str, shown: str) -> dict[str, Any]:
    return {k.replace(f"({dataset})", f"({shown})"): v for k, v in summaries.items()}


def _manttari_table(table: pd.DataFrame, pick, columns, title, labels):
    records = _manttari_records(table)
    header, rows = None, []
    for record in records:
        dataset = record["dataset"]
        shown = label_of(labels, dataset)
        part = pick(record)
        head, body = table_rows(_relabel(part["summaries"], dataset, shown), columns, part["tests"])
        if part["tests"] and len(records) > 1:
            body[-1][0] = f"Welch t-test ({shown})"
        header, rows = head, rows + body
    return draw_table(header, rows, title=title)


def manttari_table1(
    table: pd.DataFrame, title: str | None = None, labels: Mapping[str, str] | None = None
):
    """Table 1: top-1 and macro F1 of every model in order and reversed, per dataset."""
    rows = []
    for record in _manttari_records(table):
        shown = label_of(labels, record["dataset"])
        rows += [{"model": f"{m} ({shown})", **r["table1"]} for m, r in record["runs"].items()]
    return table1(rows, title=title)


def manttari_table3(
    table: pd.DataFrame,
    title: str | None = None,
    labels: Mapping[str, str] | None = None,
    layer_set: int = 1,
):
    """Table 3: Grad-CAM blob count, size and centre distance per model (``layer_set``: which
    position of the models' Grad-CAM layer lists; 1 = the paper's), Welch t-tests."""

    def pick(record):
        sets = record["tables"]["table3"]
        if not 1 <= layer_set <= len(sets):
            raise StbiasError(f"figure.layer_set={layer_set}: the runs have {len(sets)} layer sets")
        return sets[layer_set - 1]

    return _manttari_table(table, pick, TABLE3, title, labels)


def manttari_table4(
    table: pd.DataFrame, title: str | None = None, labels: Mapping[str, str] | None = None
):
    """Table 4: temporal-mask length, drop ratio and drop difference per model, t-tests."""
    return _manttari_table(table, lambda record: record["tables"]["table4"], TABLE4, title, labels)


def manttari_table2(
    table: pd.DataFrame, title: str | None = None, labels: Mapping[str, str] | None = None
):
    """Table 2: F1 per class of every model on the held-out clips in order, per dataset."""
    classes: list[str] = []
    f1: dict[str, dict[str, float]] = {}
    for record in _manttari_records(table):
        shown = label_of(labels, record["dataset"])
        for model, r in record["runs"].items():
            t = r["table1"]
            if "f1_per_class" not in t:
                raise StbiasError(
                    f"{record['dataset']}: the manttari run has no per-class F1 (written before "
                    "Table 2 existed); run it again with FORCE=1"
                )
            named = [f"{c} ({shown})" for c in t["classes"]]
            classes += [c for c in named if c not in classes]
            scores = dict(zip(named, t["f1_per_class"]))
            f1.setdefault(model, {}).update(scores)
    columns = {m: [s.get(c, float("nan")) for c in classes] for m, s in f1.items()}
    return table2(classes, columns, title=title)


def manttari_fig4(
    table: pd.DataFrame,
    title: str | None = None,
    labels: Mapping[str, str] | None = None,
    layer_set: int = 1,
    bins: int = 20,
):
    """Fig. 4: normalised histograms of the Table 3 (Grad-CAM blobs at ``layer_set``) and
    Table 4 (temporal masks) measures per model and dataset."""
    samples: dict[str, dict[str, np.ndarray]] = {}
    for record in _manttari_records(table):
        shown = label_of(labels, record["dataset"])
        for model, r in record["runs"].items():
            cams = r["gradcam"]
            if not 1 <= layer_set <= len(cams):
                raise StbiasError(f"figure.layer_set={layer_set}: the runs have {len(cams)} layers")
            samples[f"{model} ({shown})"] = {
                **blob_samples(cams[layer_set - 1]["dir"]),
                **mask_samples(r["temporal_mask"]["dir"]),
            }
    return fig4(samples, title=title, bins=bins)
