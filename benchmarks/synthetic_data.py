"""Clips per second of the synthetic generators on one CPU core (BrushMNIST and P+F+M).

Run: ``python benchmarks/synthetic_data.py [--clips N]``. Each setting first generates a few
warm-up clips (source loading, caches), then times ``N`` fresh indices.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import torch  # noqa: E402

from stbias.data import BrushMNIST, PlacesFacesMNIST  # noqa: E402

SETTINGS = ((16, 64), (150, 224))


def clips_per_second(dataset, clips: int, warmup: int = 3) -> float:
    """Generated clips per second over ``clips`` indices not used for warm-up."""
    for i in range(warmup):
        dataset[i]
    start = time.perf_counter()
    for i in range(warmup, warmup + clips):
        dataset[i]
    return clips / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=40, help="clips timed per setting")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    n = args.clips + 3
    print(f"{'dataset':<12} {'T x H x W':>12} {'clips/s':>9}")
    for frames, size in SETTINGS:
        for name, dataset in (
            ("BrushMNIST", BrushMNIST(num_frames=frames, size=size, num_samples=n)),
            ("P+F+M_8_16", PlacesFacesMNIST(num_frames=frames, size=size, num_samples=n)),
        ):
            rate = clips_per_second(dataset, args.clips)
            print(f"{name:<12} {f'{frames}x{size}x{size}':>12} {rate:>9.1f}")


if __name__ == "__main__":
    main()
