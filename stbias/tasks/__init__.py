"""Tasks: one function per task, taking the composed config. The only place that instantiates."""

from __future__ import annotations

import importlib
from typing import Any

from stbias.errors import StbiasError

# task name -> "module:function"; a task is one module under stbias/tasks plus conf/task/<name>.yaml
TASKS: dict[str, str] = {
    "center_bias": "stbias.tasks.center_bias:run",
    "compare": "stbias.tasks.compare:run",
    "explain": "stbias.tasks.explain:run",
    "gradcam": "stbias.tasks.gradcam:run",
    "layers": "stbias.tasks.layers:run",
    "manttari": "stbias.tasks.manttari:run",
    "probe": "stbias.tasks.probe:run",
    "quickstart": "stbias.tasks.quickstart:run",
    "static_dropout": "stbias.tasks.static_dropout:run",
    "temporal_mask": "stbias.tasks.temporal_mask:run",
    "test": "stbias.tasks.evaluate:run",
    "train": "stbias.tasks.train:run",
    "vos_study": "stbias.tasks.vos_study:run",
    "weights": "stbias.tasks.weights:run",
}


def run_task(cfg: Any) -> Any:
    """Run the task the config names (``cfg.task.name``) and return what it returns."""
    from stbias.reporting import quiet_libraries
    from stbias.validation import validate

    quiet_libraries(bool(cfg.get("verbose", False)))
    validate(cfg)
    name = str(cfg.task.name)
    if name not in TASKS:
        raise StbiasError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}")
    module, func = TASKS[name].split(":")
    return getattr(importlib.import_module(module), func)(cfg)
