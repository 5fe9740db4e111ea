"""Byvshev et al. Table 1 on BrushMNIST: error breakdown, footprint test, reversed frames.

Trains a model on normal and one on footprint clips, evaluates the normal model on normal,
reversed and footprint clips and the footprint model on footprints (task=test), and writes
table1.csv, table1.md and table1.{png,pdf}, stbias's numbers beside the paper's. Default: the
embedded CPU setting (experiment=byvshev_brushmnist_small: i3d_tiny, 8 frames of 32x32).

    python experiments/byvshev_table1.py
    python experiments/byvshev_table1.py --out outputs/table1 trainer.max_epochs=4
    python experiments/byvshev_table1.py --experiment byvshev_brushmnist trainer=gpu
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stbias.experiments.byvshev import TABLE1_EXPERIMENT, table1  # noqa: E402
from stbias.plotting.byvshev import table1_markdown  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default=TABLE1_EXPERIMENT)
    parser.add_argument("--out", default="outputs/byvshev_table1")
    parser.add_argument("overrides", nargs="*", help="config overrides for every run")
    args = parser.parse_args()
    overrides = ["logger=csv", "trainer.enable_progress_bar=false", *args.overrides]
    start = time.time()
    rows = table1(args.out, overrides, experiment=args.experiment)
    print()
    print(table1_markdown(rows))
    print(f"written to {args.out}/table1.csv ({(time.time() - start) / 60:.1f} min)")


if __name__ == "__main__":
    main()
