"""Single-run tasks: one function per task, taking the composed config; each composes,
instantiates and calls a core object. Studies that combine runs live in :mod:`stbias.studies`;
the command line dispatches to both (:mod:`stbias.runner`)."""

from __future__ import annotations

# task name -> "module:function"; a task is one module under stbias/tasks plus conf/task/<name>.yaml
TASKS: dict[str, str] = {
    "center_bias": "stbias.tasks.center_bias:run",
    "explain": "stbias.tasks.explain:run",
    "gradcam": "stbias.tasks.gradcam:run",
    "layers": "stbias.tasks.layers:run",
    "probe": "stbias.tasks.probe:run",
    "temporal_mask": "stbias.tasks.temporal_mask:run",
    "test": "stbias.tasks.evaluate:run",
    "train": "stbias.tasks.train:run",
    "weights": "stbias.tasks.weights:run",
}
