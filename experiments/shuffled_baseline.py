"""Shuffled-frame baseline (Kowal et al. Fig. 5 right): relative top-1 drop per model and dataset.

Trains every model twice from one initialisation, with frames in order and shuffled, and writes
shuffled_baseline.csv and shuffled_baseline.{png,pdf}. Default: i3d_tiny on BrushMNIST shapes
(the motion label) at 8 frames of 32x32 (experiment=shuffled_brushmnist).

    python experiments/shuffled_baseline.py
    python experiments/shuffled_baseline.py --models i3d_tiny c2d_tiny --out outputs/fig5
    python experiments/shuffled_baseline.py --datasets pfm -- experiment=null trainer.max_epochs=4
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stbias.reporting import console_logging  # noqa: E402
from stbias.tasks.train import shuffled_baseline  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["i3d_tiny"])
    parser.add_argument("--datasets", nargs="+", default=["brushmnist_small"])
    parser.add_argument("--out", default="outputs/shuffled_baseline")
    parser.add_argument(
        "overrides",
        nargs="*",
        default=["experiment=shuffled_brushmnist"],
        help="config overrides for every run (default: experiment=shuffled_brushmnist)",
    )
    args = parser.parse_args()
    console_logging()
    overrides = [*args.overrides, "trainer.enable_progress_bar=false"]
    start = time.time()
    rows = shuffled_baseline(args.models, args.datasets, args.out, overrides)
    print(
        f"\n{'model':<14} {'dataset':<18} {'chance':>7} {'acc_std':>8} {'acc_shuf':>9} {'drop':>6}"
    )
    for r in rows:
        print(
            f"{r['model']:<14} {r['dataset']:<18} {r['chance']:7.3f} {r['acc_std']:8.4f} "
            f"{r['acc_shuf']:9.4f} {r['drop']:6.3f}"
        )
    print(f"written to {args.out}/shuffled_baseline.csv ({(time.time() - start) / 60:.1f} min)")


if __name__ == "__main__":
    main()
