"""Batched temporal-mask search against a loop of single-clip searches; I3D's time per clip.

Run: ``python benchmarks/temporal_masks.py [--clips 16] [--iterations 20] [--device cpu]``; on a
GPU, ``--device cuda --models i3d_inception --native-input --native ''`` compares batched and
looped searches on ``i3d_inception`` at its native 64x224x224.

1. For ``i3d_tiny`` and ``clstm`` (each at its ``reduced`` input if the model declares one, else
   its native input; random weights): one search over ``--clips`` clips at once against a loop
   of single-clip searches over the same clips, same iterations. Both include the centred
   initialisation. The masks agree (checked), so the speedup is what batching saves.
2. ``i3d_inception`` at its native input (64 frames of 224x224): the cost of the initialisation
   and of one iteration per clip, measured with ``--native-iterations`` 1 and 3 after a warm-up
   search, and the time per clip of a 300-iteration search they imply.

Clips are packed as the tasks pack them (normalised, channels-last).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from omegaconf import OmegaConf  # noqa: E402

from stbias.config import option_node  # noqa: E402
from stbias.lit.explain import packer  # noqa: E402
from stbias.metrics.masks import TemporalMask  # noqa: E402
from stbias.models.inputs import InputSpec  # noqa: E402
from stbias.tasks.model_setup import build_model  # noqa: E402

DEVICE = torch.device("cpu")
INPUT: dict[str, int] = {}  # frames / size replacing the model's (tiny smoke runs)


def setup(name: str, native: bool = False):
    """The model (eval, random weights, seeded, on ``DEVICE``) and its input spec (reduced
    unless native)."""
    node = option_node("model", name)
    spec = OmegaConf.to_container(node.input, resolve=True)
    reduced = node.get("reduced")
    if reduced and not native:
        spec.update(OmegaConf.to_container(reduced, resolve=True))
    spec.update(INPUT)
    torch.manual_seed(0)
    return build_model(node).eval().to(DEVICE), InputSpec.from_dict(spec)


def clips_for(spec: InputSpec, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, spec.channels, spec.frames, spec.size, spec.size, generator=g)
    return x.to(DEVICE)


def timed(fn) -> tuple[float, object]:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)
    start = time.perf_counter()
    out = fn()
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)
    return time.perf_counter() - start, out


def batched_vs_loop(name: str, clips: int, iterations: int, native: bool = False) -> float:
    model, spec = setup(name, native)
    x = clips_for(spec, clips)
    search = TemporalMask(model, pack=packer(spec), iterations=iterations)
    search.run(x[:2])  # warm-up
    batched, out = timed(lambda: search.run(x))
    loop, singles = timed(lambda: [search.run(x[i : i + 1]) for i in range(clips)])
    worst = max(float((out["mask"][i] - s["mask"][0]).abs().max()) for i, s in enumerate(singles))
    print(
        f"temporal_masks {name} ({spec.frames}x{spec.size}x{spec.size}, {iterations} iterations, "
        f"{clips} clips, {DEVICE.type}): "
        f"batched {batched:.1f} s, loop of single-clip searches {loop:.1f} s, "
        f"speedup {loop / batched:.1f}x (largest mask difference {worst:.1e})",
        flush=True,
    )
    return loop / batched


def native_time_per_clip(name: str, batch: int, short: int, long: int) -> None:
    model, spec = setup(name, native=True)
    x = clips_for(spec, batch)
    pack = packer(spec)
    TemporalMask(model, pack=pack, iterations=short).run(x)  # warm-up: one-time set-up costs
    t_short, _ = timed(lambda: TemporalMask(model, pack=pack, iterations=short).run(x))
    t_long, _ = timed(lambda: TemporalMask(model, pack=pack, iterations=long).run(x))
    per_iteration = (t_long - t_short) / (long - short) / batch
    init = t_short / batch - short * per_iteration
    print(
        f"{name} native ({spec.frames}x{spec.size}x{spec.size}, batch {batch}): "
        f"initialisation and final scores {init:.1f} s per clip, {per_iteration:.2f} s per "
        f"iteration per clip -> {init + 300 * per_iteration:.0f} s per clip for 300 iterations",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    global DEVICE, INPUT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--models", nargs="*", default=["i3d_tiny", "clstm"])
    parser.add_argument("--native", default="i3d_inception")
    parser.add_argument("--native-batch", type=int, default=1)
    parser.add_argument("--native-iterations", type=int, nargs=2, default=[1, 3])
    parser.add_argument("--native-input", action="store_true", help="--models at native input")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, help="replace the input's frames")
    parser.add_argument("--size", type=int, help="replace the input's size")
    args = parser.parse_args(argv)
    DEVICE = torch.device(args.device)
    INPUT = {k: v for k, v in (("frames", args.frames), ("size", args.size)) if v is not None}
    print(f"torch threads: {torch.get_num_threads()}")
    for name in args.models:
        batched_vs_loop(name, args.clips, args.iterations, args.native_input)
    if args.native:
        native_time_per_clip(args.native, args.native_batch, *args.native_iterations)


if __name__ == "__main__":
    main()
