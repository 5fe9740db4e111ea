"""The packaged Hydra configs: where they are, and composing them from Python."""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CONF_DIR = Path(__file__).resolve().parent / "conf"

# the groups whose option may name the task it runs in (its `task` key), in order of precedence:
# `metric=asdt` runs in task=weights, `model=quickstart` in task=quickstart
HOME_TASK_GROUPS = ("metric", "model")
# the root config's task: the one a home task replaces
DEFAULT_TASK = "probe"


def names_task(overrides: Sequence[str]) -> bool:
    """Whether ``overrides`` choose the task themselves (``task=...``)."""
    return any(o.lstrip("+~").split("=", 1)[0] == "task" for o in overrides)


def home_task(cfg: Any) -> tuple[str, str] | None:
    """``(group=option, task)`` of the first option of :data:`HOME_TASK_GROUPS` that names the
    task it runs in, or None."""
    for group in HOME_TASK_GROUPS:
        node = cfg.get(group)
        task = node.get("task") if hasattr(node, "get") else None
        if task:
            return f"{group}={node.get('name')}", str(task)
    return None


def _compose(overrides: list[str], return_hydra_config: bool) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return hydra_compose(
            config_name="config", overrides=overrides, return_hydra_config=return_hydra_config
        )
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(
            config_name="config", overrides=overrides, return_hydra_config=return_hydra_config
        )


def _is_choice(override: str) -> bool:
    """Whether an override chooses an option (``model=i3d``, ``experiment=manttari``) or sets the
    search path, rather than a key inside a node."""
    key = override.lstrip("+~").split("=", 1)[0]
    return "." not in key or key == "hydra.searchpath"


def with_home_task(cfg: Any, overrides: Sequence[str]) -> list[str]:
    """``overrides`` plus ``task=<home>`` when the task is the root's default (neither
    ``overrides`` nor an experiment chose one) and an option of ``cfg`` names the task it runs in
    (see :func:`home_task`); else ``overrides`` unchanged."""
    overrides = list(overrides)
    default = str(cfg.task.get("name")) == DEFAULT_TASK and not names_task(overrides)
    home = home_task(cfg) if default else None
    if home is not None and home[1] != DEFAULT_TASK:
        overrides.append(f"task={home[1]}")
    return overrides


def compose(overrides: Sequence[str] = (), return_hydra_config: bool = False) -> Any:
    """The root config with ``overrides``, as ``python run.py <overrides>`` composes it.

    The task is the ``task`` group's option; when ``overrides`` name none, an option that names
    the task it runs in (``metric=asdt``: weights) chooses it, as on the command line.
    Works inside a running Hydra app (a task composing a sibling config) and outside one.
    """
    overrides = list(overrides)
    if not names_task(overrides):
        # the options alone say the task; then keys of that task's node can be set
        home = _home_of(tuple(o for o in overrides if _is_choice(o)), _in_app())
        overrides += [f"task={home}"] if home else []
    return _compose(overrides, return_hydra_config)


def _in_app() -> bool:
    from hydra.core.global_hydra import GlobalHydra

    return GlobalHydra.instance().is_initialized()


def _home(choices: tuple[str, ...]) -> str | None:
    added = with_home_task(_compose(list(choices), False), choices)[len(choices) :]
    return added[0].split("=", 1)[1] if added else None


_home_cached = functools.lru_cache(maxsize=256)(_home)


def _home_of(choices: tuple[str, ...], in_app: bool) -> str | None:
    """The home task the options ``choices`` name (None: the root's default stays); cached
    outside a Hydra app, where the configs cannot change between calls."""
    return _home(choices) if in_app else _home_cached(choices)


def option_node(group: str, option: str) -> Any:
    """The config node of ``group=option`` (e.g. the ``model`` node of ``model=i3d_tiny``)."""
    return copy.deepcopy(compose([f"{group}={option}"])[group])
