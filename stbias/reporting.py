"""What a run shows on the terminal: stbias's own messages, not the libraries' chatter."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator

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
