"""The packaged Hydra configs: where they are, and composing them from Python."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CONF_DIR = Path(__file__).resolve().parent / "conf"


def compose(overrides: Sequence[str] = (), return_hydra_config: bool = False) -> Any:
    """The root config with ``overrides``, as ``python run.py <overrides>`` composes it.

    Works inside a running Hydra app (a task composing a sibling config) and outside one.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides = list(overrides)
    if GlobalHydra.instance().is_initialized():
        return hydra_compose(
            config_name="config", overrides=overrides, return_hydra_config=return_hydra_config
        )
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(
            config_name="config", overrides=overrides, return_hydra_config=return_hydra_config
        )


def option_node(group: str, option: str) -> Any:
    """The config node of ``group=option`` (e.g. the ``model`` node of ``model=i3d_tiny``)."""
    return copy.deepcopy(compose([f"{group}={option}"])[group])
