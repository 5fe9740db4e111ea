"""Probing every stage in one pass against one probe run per stage (the authors' procedure).

Run: ``python benchmarks/all_layers_one_pass.py [--model i3d_tiny] [--clips N]``. Both use the
same clips, model and stylization; the per-stage runs each stylize, pack and forward the clips
again (their forward stops after the tapped stage, which favours them), so the speedup is what
one pass over all stages saves.
"""

from __future__ import annotations

import argparse

from _probe_common import clips, model_setup, time_probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="i3d_tiny")
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    model, layers, channels, spec, sampler = model_setup(args.model)
    videos = clips(spec, args.clips)
    time_probe(model, layers, channels, spec, sampler, videos[: args.batch], args.batch)
    one_pass = time_probe(model, layers, channels, spec, sampler, videos, args.batch)
    per_stage = {
        alias: time_probe(model, {alias: path}, channels, spec, sampler, videos, args.batch)
        for alias, path in layers.items()
    }
    total = sum(per_stage.values())
    stages = ", ".join(f"{a} {t:.2f} s" for a, t in per_stage.items())
    print(f"{args.model}: {len(layers)} layers, {args.clips} clips")
    print(f"  one pass over all layers: {one_pass:.2f} s")
    print(f"  one run per layer:        {total:.2f} s ({stages})")
    print(f"  speedup: {total / one_pass:.2f}x")


if __name__ == "__main__":
    main()
