"""Loggers for every task: a W&B run named and grouped by what ran, that never fails a run.

``build_logger`` starts the logger of the ``logger`` group, ``log_run`` writes a finished task's
numbers (run summary, tables, figures, and the run's files as a W&B artifact), ``record_config``
gives every task the same W&B config (the header of its ``results.json``: ``task``, ``model``,
``dataset``, ``weights``, ``seed`` as strings and numbers, ``settings`` and ``config`` nested)
and ``finish_logger`` closes the run with one line saying where it is. A W&B server that cannot
be reached costs at most a few seconds: the run then logs offline (``wandb sync`` uploads it
later).
"""

from __future__ import annotations

import copy
import logging
import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlparse

from hydra.utils import instantiate
from omegaconf import open_dict

log = logging.getLogger(__name__)
REACH_TIMEOUT = 3.0  # seconds to wait for the W&B server before logging offline


def run_identity(task: str, model: str, dataset: str) -> dict[str, Any]:
    """The run's W&B name, group and tags: ``<task>-<model>-<dataset>``.

    The points of one Hydra multirun share a group (``<task>-<sweep folder>``) and their names
    carry the point's overrides.
    """
    name = f"{task}-{model}-{dataset}"
    group, tags = name, [task, model, dataset]
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            hydra = HydraConfig.get()
            group = f"{task}-{os.path.basename(os.path.normpath(str(hydra.sweep.dir)))}"
            if hydra.job.override_dirname:
                name = f"{name} {hydra.job.override_dirname}"
    except (ImportError, ValueError):
        pass
    return {"name": name, "group": group, "tags": tags}


def _wandb_server() -> str:
    return os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"


def server_reachable(url: str, timeout: float = REACH_TIMEOUT) -> bool:
    """Whether a TCP connection to the server of ``url`` opens within ``timeout`` seconds."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def build_logger(
    logger_cfg: Any,
    save_dir: str,
    *,
    name: str | None = None,
    group: str | None = None,
    tags: Sequence[str] = (),
) -> Any:
    """The Lightning logger ``logger_cfg`` names (``False`` for ``logger=none``).

    ``save_dir`` fills an unset ``save_dir``; ``name``, ``group`` and ``tags`` fill what the
    config leaves unset (``logger.tags`` are added to ``tags``). W&B never fails a run: an online
    logger whose server does not answer within a few seconds, or that cannot start, logs offline
    (one warning line); failing that, a CSV logger in ``save_dir`` takes over.
    """
    if logger_cfg is None or not logger_cfg.get("_target_"):
        return False
    logger_cfg = copy.deepcopy(logger_cfg)
    is_wandb = str(logger_cfg._target_).rsplit(".", 1)[-1] == "WandbLogger"
    with open_dict(logger_cfg):
        if "save_dir" in logger_cfg and not logger_cfg.save_dir:
            logger_cfg.save_dir = save_dir
        if is_wandb:
            logger_cfg.name = logger_cfg.get("name") or name
            logger_cfg.group = logger_cfg.get("group") or group
            logger_cfg.tags = sorted({*map(str, logger_cfg.get("tags") or []), *tags})
    os.makedirs(save_dir, exist_ok=True)
    attempts = [logger_cfg]
    if is_wandb and not logger_cfg.get("offline", False):
        offline = copy.deepcopy(logger_cfg)
        with open_dict(offline):
            offline.offline = True
        server = _wandb_server()
        if server_reachable(server):
            attempts.append(offline)
        else:
            log.warning("W&B server %s cannot be reached: logging offline", server)
            attempts = [offline]
    for attempt in attempts:
        try:
            logger = instantiate(attempt, _convert_="all")
            if is_wandb:
                # Lightning always passes W&B's deprecated `anonymous` setting, which W&B then
                # warns about on the terminal whatever its own silent setting
                init = getattr(logger, "_wandb_init", None)
                if isinstance(init, dict) and init.get("anonymous") is None:
                    init.pop("anonymous", None)
                logger.experiment  # noqa: B018 - starts the W&B run now, where failure is caught
            return logger
        except Exception as err:  # noqa: BLE001 - any logger failure must not end the run
            log.warning(
                "logger %s could not start (%s: %s)", attempt._target_, type(err).__name__, err
            )
            if is_wandb:
                _reset_wandb()
    from pytorch_lightning.loggers import CSVLogger

    log.warning("logging to CSV files in %s instead", save_dir)
    return CSVLogger(save_dir=save_dir, name="csv")


def _reset_wandb() -> None:
    # a failed wandb.init leaves its service waiting on the dead run, and the next start (offline)
    # would wait for it too
    try:
        import wandb

        wandb.teardown()
    except Exception:  # noqa: BLE001 - nothing more to clean up
        pass


def is_wandb(logger: Any) -> bool:
    """Whether ``logger`` is Lightning's W&B logger."""
    return type(logger).__name__ == "WandbLogger"


# the files of a run directory that go into its W&B artifact: the record, the tables, the
# per-unit scores, masks and maps (figures go in as images)
ARTIFACT_PATTERNS = ("results.json", "*.csv", "*.npz", "*.tex", "*.md")
# the record's keys that every task logs as its W&B config, besides settings and config
CONFIG_KEYS = ("task", "model", "dataset", "weights", "seed")


def record_config(record: Mapping[str, Any], *extra: str) -> dict[str, Any]:
    """The W&B config of a run: its record's header (plus the ``extra`` keys it has).

    The same names and types for every task, so that runs of different tasks sit in one W&B
    table: ``task``, ``model``, ``dataset``, ``weights`` (strings), ``seed`` (a number), and
    ``settings`` and ``config`` (the whole composed config) as nested values.
    """
    keys = (*CONFIG_KEYS, *extra, "settings", "config")
    return {k: record.get(k) for k in keys if k in record}


def run_files(folder: str | os.PathLike) -> list[str]:
    """The files of a run directory that its W&B artifact holds (see ``ARTIFACT_PATTERNS``)."""
    import glob

    found: list[str] = []
    for pattern in ARTIFACT_PATTERNS:
        found += sorted(glob.glob(os.path.join(os.fspath(folder), pattern)))
    return list(dict.fromkeys(found))


def log_run(
    logger: Any,
    *,
    config: Mapping[str, Any] | None = None,
    summary: Mapping[str, Any] | None = None,
    tables: Mapping[str, tuple[Sequence[str], Sequence[Sequence[Any]]]] | None = None,
    images: Mapping[str, Sequence[str]] | None = None,
    files: Sequence[str] = (),
) -> None:
    """Write a finished task's numbers: config, run summary, tables, figures and files.

    For W&B the per-layer values go to the run summary (not one-point series), each table to a
    ``wandb.Table``, each figure to an image and ``files`` (``results.json``,
    ``unit_scores.npz``, masks, maps: :func:`run_files`) into one artifact of type ``results``
    named ``results-<run id>``; other loggers get the summary as metrics. Logging never loses
    a finished run: a failure is one warning.
    """
    if not logger:
        return
    try:
        if config:
            logger.log_hyperparams(dict(config))
        if is_wandb(logger):
            run = logger.experiment
            if summary:
                run.summary.update(dict(summary))
            for key, (columns, rows) in (tables or {}).items():
                logger.log_table(key, columns=list(columns), data=[list(r) for r in rows])
            for key, figures in (images or {}).items():
                pngs = [f for f in figures if str(f).endswith(".png")]
                if len(pngs) == 1:
                    logger.log_image(key, images=pngs)
                else:  # one key each: W&B would warn about a list of images of different sizes
                    for png in pngs:
                        stem = os.path.splitext(os.path.basename(str(png)))[0]
                        logger.log_image(f"{key}/{stem}", images=[png])
            present = [f for f in files if os.path.isfile(f)]
            if present:
                import wandb

                artifact = wandb.Artifact(f"results-{run.id}", type="results")
                for path in present:
                    artifact.add_file(str(path), name=os.path.basename(str(path)))
                run.log_artifact(artifact)
        elif summary:
            logger.log_metrics({k: v for k, v in summary.items() if _is_number(v)})
    except Exception as err:  # noqa: BLE001 - logging must never lose a finished run
        log.warning("could not log to %s (%s: %s)", type(logger).__name__, type(err).__name__, err)


def row_table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Records (one dict each, the first one's keys as columns) as ``log_run``'s table."""
    columns = list(rows[0]) if rows else []
    return columns, [[r.get(c) for c in columns] for r in rows]


def publish(
    logger_cfg: Any,
    folder: str,
    task: str,
    model: str,
    dataset: str,
    **what: Any,
) -> None:
    """Log a finished run of ``task`` from its folder and close the logger.

    The logger ``logger_cfg`` names (:func:`build_logger`, named by :func:`run_identity`) gets
    ``what`` (``config``, ``summary``, ``tables``, ``images``: see :func:`log_run`) and the
    run folder's files (:func:`run_files`).
    """
    logger = build_logger(logger_cfg, folder, **run_identity(task, model, dataset))
    log_run(logger, files=run_files(folder), **what)
    finish_logger(logger)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finish_logger(logger: Any) -> None:
    """Close the run, then say in one line where it is (and how to upload an offline run)."""
    if not logger:
        return
    try:
        logger.finalize("success")
        if is_wandb(logger) and getattr(logger, "_experiment", None) is not None:
            run = logger.experiment
            folder = os.path.dirname(str(run.dir))  # <run>/wandb/offline-run-*/files -> its run
            offline = bool(getattr(run.settings, "_offline", False)) or "offline-run" in folder
            run.finish()
            if offline:
                log.info("W&B: offline run in %s (upload: wandb sync %s)", folder, folder)
            else:
                log.info("W&B: %s", getattr(run, "url", folder))
    except Exception as err:  # noqa: BLE001 - closing the logger must not fail the run
        log.warning("could not close %s (%s: %s)", type(logger).__name__, type(err).__name__, err)
