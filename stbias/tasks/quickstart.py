"""`task=quickstart` (what `python run.py` runs): a frame-order-blind and a 3D model side by side.

``c2d_tiny`` (2D convolutions per frame, no temporal mixing before the final pooling) and
``i3d_tiny`` (3D convolutions) are trained briefly on the embedded Places+Faces+MNIST — once; the
checkpoints are cached — and then probed on its held-out split. ``c2d_tiny`` cannot see frame
order, so every unit of it scores ``s_static = 1`` and none is dynamic; ``i3d_tiny`` can.
"""

from __future__ import annotations

import os
from typing import Any

from stbias import io
from stbias.plotting import save_figure
from stbias.plotting.pairs import fig3
from stbias.tasks.common import output_dir, plain
from stbias.tasks.probe import layer_rows, summary_table
from stbias.tasks.probe import probe as probe_layers
from stbias.tasks.train import compose_config, ensure_quickstart_checkpoint


def _dataset_overrides(cfg_overrides: list[str]) -> list[str]:
    return [o for o in cfg_overrides if o.startswith("dataset.")]


def run(cfg: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train (or load) each of ``cfg.task.models`` and probe it; write the comparison."""
    from stbias.tasks.train import QUICKSTART

    folder = output_dir()
    cache = os.path.abspath(str(cfg.task.cache_dir))
    probe_args = [f"probe.{k}={v}" for k, v in plain(cfg.probe).items() if k not in ("layers",)]
    records, trained = {}, {}
    for name in cfg.task.models:
        trained[name] = ensure_quickstart_checkpoint(str(name), os.path.join(cache, "train"))
        overrides = [
            "task=probe",
            *trained[name]["config_overrides"],
            "dataset=pfm",
            *_dataset_overrides(list(QUICKSTART[str(name)])),
            f"dataset.split={cfg.task.split}",
            *probe_args,
            f"metric.lam={cfg.metric.lam}",
            f"seed={cfg.seed}",
            "logger=none",
        ]
        probe_cfg = compose_config(overrides)
        record, unit_scores, _ = probe_layers(probe_cfg)
        record["train"] = {k: trained[name].get(k) for k in ("val/acc", "checkpoint", "minutes")}
        records[str(name)] = record
        io.write_npz(os.path.join(folder, f"unit_scores_{name}.npz"), unit_scores)
        print(summary_table(record))
        acc = trained[name].get("val/acc")
        if acc is not None:
            print(f"  ({name}: validation accuracy {100 * acc:.1f} %)\n")

    summary = {
        "task": "quickstart",
        "models": list(records),
        "dataset": "pfm",
        "lam": float(cfg.metric.lam),
        "results": records,
    }
    io.write_json(os.path.join(folder, "results.json"), summary)
    rows = [
        row
        for name, record in records.items()
        for row in layer_rows(
            record["layers"],
            {
                "model": name,
                "dataset": "pfm",
                "stylization": record["stylization"],
                "seed": record["seed"],
            },
        )
    ]
    io.write_csv(os.path.join(folder, "results.csv"), rows)
    figure = fig3(
        {name: record["layers"] for name, record in records.items()},
        title="Static vs dynamic units: frame-wise 2D CNN vs 3D CNN (embedded P+F+M)",
    )
    figures = save_figure(figure, os.path.join(folder, "fig3"))
    print(f"figure: {figures[0]}\nresults: {os.path.join(folder, 'results.json')}")
    return summary, {"figures": figures}
