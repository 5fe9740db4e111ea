"""``task=<name>`` to the function that runs it: a single-run task (:mod:`stbias.tasks`) or a
study that combines runs (:mod:`stbias.studies`). The command line and the tests call
:func:`run_task`; it sits above both, so neither imports the other's dispatch."""

from __future__ import annotations

import importlib
from typing import Any

from stbias.errors import StbiasError
from stbias.reporting import quiet_libraries
from stbias.tasks import TASKS
from stbias.validation import validate

# study name -> "module:function"; a study is one module under stbias/studies plus
# conf/task/<name>.yaml
STUDIES: dict[str, str] = {
    "compare": "stbias.studies.compare:run",
    "manttari": "stbias.studies.manttari:run",
    "quickstart": "stbias.studies.quickstart:run",
    "scene_bias": "stbias.studies.scene_bias:run",
    "static_dropout": "stbias.studies.static_dropout:run",
    "vos_study": "stbias.studies.vos_study:run",
    "vos_moca": "stbias.studies.vos_moca:run",
    "vis_study": "stbias.studies.vis:run",
}
RUNS: dict[str, str] = {**TASKS, **STUDIES}


def run_task(cfg: Any) -> Any:
    """Run the task the config names (``cfg.task.name``) and return what it returns.

    The named module is imported here, by name, so that starting one task does not load the
    others (start-up time of the command line).
    """
    quiet_libraries(bool(cfg.get("verbose", False)))
    validate(cfg)
    name = str(cfg.task.name)
    if name not in RUNS:
        raise StbiasError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(RUNS))}")
    module, func = RUNS[name].split(":")
    return getattr(importlib.import_module(module), func)(cfg)
