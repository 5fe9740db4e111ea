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
    except StbiasError as err:
        print(f"stbias: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
