"""Probe wall time over the bare forward time of the same model on the same 3·n clips.

Run: ``python benchmarks/probe_overhead.py [--clips N]``. The probe's time covers stylizing each
clip twice, packing, one forward pass over the three views with hooks on every declared layer,
pooling and the pair statistics; the baseline runs only the forward passes of the same 3·n clips.
Both run in this process on the same clips, after one warm-up batch each, alternating, and the
fastest of ``--repeats`` runs of each counts (the least disturbed by other load).
"""

from __future__ import annotations

import argparse

import torch
from _probe_common import clips, model_setup, time_forward, time_probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for name, overrides in (("i3d_tiny", ()), ("i3d", ())):
        model, layers, channels, spec, sampler = model_setup(name, *overrides)
        videos = clips(spec, args.clips)
        warm = videos[: args.batch]
        time_forward(model, spec, warm, args.batch)
        time_probe(model, layers, channels, spec, sampler, warm, args.batch)
        bare, probe = float("inf"), float("inf")
        for _ in range(args.repeats):
            bare = min(bare, time_forward(model, spec, videos, args.batch))
            probe = min(
                probe, time_probe(model, layers, channels, spec, sampler, videos, args.batch)
            )
        print(
            f"{name:9s} {spec.frames}x{spec.size}x{spec.size}, {args.clips} clips x 3 views, "
            f"{len(layers)} layers, {torch.get_num_threads()} threads: forward {bare:7.2f} s, "
            f"probe {probe:7.2f} s, ratio {probe / bare:.3f}"
        )


if __name__ == "__main__":
    main()
