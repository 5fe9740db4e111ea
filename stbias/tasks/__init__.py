"""Tasks: one function per task, taking the composed config. The only place that instantiates."""

from __future__ import annotations

import importlib
from typing import Any

from stbias.errors import StbiasError

# task name -> "module:function"; a task is one module under stbias/tasks plus conf/task/<name>.yaml
TASKS: dict[str, str] = {
    "layers": "stbias.tasks.layers:run",
    "probe": "stbias.tasks.probe:run",
    "quickstart": "stbias.tasks.quickstart:run",
    "test": "stbias.tasks.evaluate:run",
    "train": "stbias.tasks.train:run",
    "weights": "stbias.tasks.weights:run",
}


def run_task(cfg: Any) -> Any:
    """Run the task the config names (``cfg.task.name``) and return what it returns."""
    name = str(cfg.task.name)
    if name not in TASKS:
        raise StbiasError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}")
    module, func = TASKS[name].split(":")
    return getattr(importlib.import_module(module), func)(cfg)
