"""What a run shows on the terminal: stbias's own messages, not the libraries' chatter."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from hydra.experimental.callback import Callback

# libraries whose INFO messages (device lines, tips, run summaries) and warnings are hidden unless
# verbose=true; their errors always show
LIBRARIES = (
    "pytorch_lightning",
    "lightning",
    "lightning_fabric",
    "lightning_utilities",
    "torch",
    "torchvision",
    "pytorchvideo",
    "timm",
    "wandb",
    "hydra",
    "omegaconf",
    "torchmetrics",
    "matplotlib",
    "PIL",
    "fsspec",
    "urllib3",
    "filelock",
    "fontTools",  # subsetting the TrueType fonts embedded in every PDF
)


LIGHTNING = ("pytorch_lightning", "lightning", "lightning_fabric")


class ConsoleFormatter(logging.Formatter):
    """Plain messages; warnings and errors say so (``warning: ...``)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and record.levelno >= logging.ERROR:
            message += "\n" + self.formatException(record.exc_info)
        if record.levelno >= logging.ERROR:
            return f"error: {message}"
        if record.levelno >= logging.WARNING:
            return f"warning: {message}"
        return message


class RunLogFile(logging.FileHandler):
    """The run's log file (``<run dir>/stbias.log``), opened at the first record.

    A write that fails (disk full) is said once on the console, and the file is left alone from
    then on, instead of a logging traceback for every later message.
    """

    def __init__(self, filename: str, mode: str = "a", encoding: str | None = None) -> None:
        super().__init__(filename, mode=mode, encoding=encoding, delay=True)
        self.failed = False

    def emit(self, record: logging.LogRecord) -> None:
        """Write ``record`` unless an earlier write failed."""
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        """Say once why the log file is no longer written."""
        if self.failed:
            return
        self.failed = True
        err = sys.exc_info()[1]
        reason = getattr(err, "strerror", None) or type(err).__name__
        sys.stderr.write(
            f"warning: cannot write the run's log {self.baseFilename!r}: {reason}; going on "
            "without it\n"
        )


def quiet_libraries(verbose: bool = False) -> None:
    """Hide the libraries' INFO lines and warnings (or show everything with ``verbose``)."""
    # Lightning sets its loggers' levels when imported: import it first, then set them
    import pytorch_lightning  # noqa: F401

    level = logging.INFO if verbose else logging.ERROR
    names = set(LIBRARIES) | {
        name for name in logging.root.manager.loggerDict if name.split(".")[0] in LIBRARIES
    }
    for name in names:
        logging.getLogger(name).setLevel(level)
    if verbose:
        logging.getLogger("stbias").setLevel(logging.DEBUG)
        return
    os.environ.setdefault("WANDB_SILENT", "true")  # W&B's own terminal notes
    pattern = r"(" + "|".join(LIBRARIES) + r")(\.|$)"
    warnings.filterwarnings("ignore", module=pattern)
    for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category)


@contextlib.contextmanager
def lightning_quiet() -> Iterator[None]:
    """Lightning's start-up lines (devices, tips) hidden for the duration, levels restored after.

    For the Python API, which builds Trainers inside a user's session without changing the
    session's logging for good.
    """
    import pytorch_lightning  # noqa: F401 - its loggers exist once it is imported

    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in LIGHTNING]
    saved = {n: logging.getLogger(n).level for n in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"(pytorch_lightning|lightning)(\.|$)")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def console_logging(verbose: bool = False) -> None:
    """For scripts outside ``run.py``: stbias's messages on the terminal, the libraries quiet."""
    handler = logging.StreamHandler()
    handler.setFormatter(ConsoleFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    quiet_libraries(verbose)


def sweep_points(overrides: Sequence[str], params: Mapping[str, Any] | None = None) -> tuple:
    """The number of points of a sweep and the keys it varies (``None`` when not countable).

    ``overrides`` are the multirun's command-line overrides (``metric.lam=0.3,0.7``), ``params``
    the sweeper's ``hydra.sweeper.params`` (an experiment's sweep).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    lines = list(overrides) + [f"{k}={v}" for k, v in (params or {}).items()]
    total, keys = 1, []
    try:
        for override in OverridesParser.create().parse_overrides(lines):
            if override.is_sweep_override():
                # a glob over a config group needs the config loader to count: not counted
                if type(override.value()).__name__ == "Glob":
                    return None, keys
                total *= len(list(override.sweep_string_iterator()))
                keys.append(override.get_key_element())
    except Exception:  # noqa: BLE001 - a sweep Hydra accepts but this cannot count
        return None, keys
    return total, keys


class JobLines(Callback):
    """Hydra callback: each point of a multirun says which it is, ``[2/5] metric.lam=0.3``.

    Hydra's own ``#1 : ...`` lines belong to its logger, which stays quiet with the other
    libraries (``verbose=false``); this line goes through stbias's own, to the console and the
    point's log file.
    """

    def __init__(self) -> None:
        super().__init__()
        self.total: int | None = None
        self.keys: list[str] = []

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        """Count the points of the sweep before the first one starts."""
        params = config.hydra.sweeper.get("params") if "sweeper" in config.hydra else None
        self.total, self.keys = sweep_points(
            list(config.hydra.overrides.task), dict(params) if params else None
        )

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        """One line naming the point (its sweep values) before it runs."""
        from hydra.types import RunMode

        hydra = config.hydra
        if hydra.mode != RunMode.MULTIRUN:
            return
        overrides = list(hydra.overrides.task)
        varying = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in self.keys]
        shown = " ".join(varying or overrides) or "(no overrides)"
        number = int(hydra.job.num) + 1
        of = f"/{self.total}" if self.total else ""
        logging.getLogger("stbias.sweep").info("[%d%s] %s", number, of, shown)
