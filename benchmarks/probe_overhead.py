"""Probe wall time over the bare forward time of the same model on the same 3·n clips.

Run: ``python benchmarks/probe_overhead.py [--clips N] [--batches 4] [--device cpu]
[--dtypes fp32]``; on a GPU e.g. ``--device cuda --batches 8 16 32 64 --dtypes bf16 fp16
--clips 128``. The probe's time covers stylizing each clip twice, packing, one forward pass over
the three views with hooks on every declared layer, pooling and the pair statistics (float64
sums whatever the forward's dtype); the baseline runs only the forward passes of the same 3·n
clips, channels-last as the probe feeds them. Both run in this process on the same clips, under
autocast to the dtype (fp32: none), after one warm-up batch each, alternating, and the fastest of
``--repeats`` runs of each counts (the least disturbed by other load). One line per setting,
``probe_overhead <model> ... ratio R``.
"""

from __future__ import annotations

import argparse

import torch
from _probe_common import DTYPES, clips, model_setup, time_forward, time_probe


def main(argv: list[str] | None = None) -> list[float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--batches", type=int, nargs="+", default=[4], help="clips per step")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["i3d_tiny", "i3d"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", nargs="+", default=["fp32"], choices=sorted(DTYPES))
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.input.size=32")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    ratios = []
    for name in args.models:
        model, layers, channels, spec, sampler = model_setup(name, *args.overrides)
        model.to(device)
        videos = clips(spec, args.clips)
        for dtype_name in args.dtypes:
            dtype = DTYPES[dtype_name]
            for batch in args.batches:
                warm = videos[:batch]
                time_forward(model, spec, warm, batch, device, dtype)
                time_probe(model, layers, channels, spec, sampler, warm, batch, device, dtype)
                bare, probe = float("inf"), float("inf")
                for _ in range(args.repeats):
                    bare = min(bare, time_forward(model, spec, videos, batch, device, dtype))
                    probe = min(
                        probe,
                        time_probe(
                            model, layers, channels, spec, sampler, videos, batch, device, dtype
                        ),
                    )
                ratios.append(probe / bare)
                print(
                    f"probe_overhead {name} {spec.frames}x{spec.size}x{spec.size} batch {batch} "
                    f"{dtype_name} {device.type}, {args.clips} clips x 3 views, {len(layers)} "
                    f"layers, {torch.get_num_threads()} threads: forward {bare:7.2f} s, probe "
                    f"{probe:7.2f} s, ratio {probe / bare:.3f}",
                    flush=True,
                )
    return ratios


if __name__ == "__main__":
    main()
