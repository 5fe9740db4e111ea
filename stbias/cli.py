"""The command line: ``stbias [group=option ...] [key=value ...]`` (also ``python run.py``).

The configs ship inside the package (``stbias/conf``; a checkout links ``conf/`` to it), so the
installed ``stbias`` command, ``python -m stbias`` and ``python run.py`` compose the same root
config with the same overrides.
"""

from __future__ import annotations

import functools
import os
import sys
from datetime import datetime

import hydra
from omegaconf import DictConfig, OmegaConf

from stbias.errors import StbiasError
from stbias.runner import run_task
from stbias.validation import check_arguments


@functools.cache
def run_id() -> str:
    """This process's run-folder suffix: microseconds and process id (stable within a process)."""
    return f"{datetime.now():%f}-{os.getpid()}"


OmegaConf.register_new_resolver("stbias_run_id", run_id, replace=True)


def _stop_on_unwritable_run_folder() -> None:
    """Hydra's own first write into the run folder (``.hydra/config.yaml``) that fails (disk
    full) is one line and exit code 2, as every other write of a run, not a traceback."""
    from hydra.core import utils

    save = utils._save_config
    if getattr(save, "stbias_guarded", False):
        return

    def guarded(cfg, filename, output_dir):
        try:
            save(cfg, filename, output_dir)
        except OSError as err:
            reason = err.strerror or type(err).__name__
            path = os.path.join(os.fspath(output_dir), filename)
            print(f"stbias: error: cannot write {path!r}: {reason}", file=sys.stderr)
            sys.exit(2)

    guarded.stbias_guarded = True
    utils._save_config = guarded


_stop_on_unwritable_run_folder()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def _main(cfg: DictConfig):
    try:
        return run_task(cfg)
    except Exception as err:
        # hydra.utils.instantiate wraps a builder's error; show the user the builder's message
        cause = err
        while cause is not None and not isinstance(cause, StbiasError):
            cause = cause.__cause__
        if cause is None:
            raise
        print(f"stbias: error: {cause}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    """Entry point of the ``stbias`` command.

    The command line is composed and checked first (:func:`stbias.validation.check_arguments`):
    a key that is not a setting, a wrong type or a key the task does not read is one line and
    exit code 2, before Hydra starts the run.
    """
    try:
        sys.argv[1:] = check_arguments(sys.argv[1:])
    except StbiasError as err:
        print(f"stbias: error: {err}", file=sys.stderr)
        sys.exit(2)
    _main()


if __name__ == "__main__":
    main()
