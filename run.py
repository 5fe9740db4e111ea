"""stbias entry point: ``python run.py [group=option ...] [key=value ...]`` (see README)."""

import sys

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    from stbias.errors import StbiasError
    from stbias.tasks import run_task

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


if __name__ == "__main__":
    if len(sys.argv) == 1:
        # no arguments: the embedded default, no download needed
        sys.argv.append("experiment=quickstart")
    main()
