"""Stylizer acceptance check (SPEC section 7) and stylization throughput on the CPU.

For every built-in texture style (and a few seeded random ones) on a synthetic clip with known
motion: the optical flow of the styled clip against the flow of every other style (relative
end-point error), and the change of per-frame appearance (mean absolute difference, histogram
distance). A control that shifts each frame differently shows what a motion-breaking stylizer
scores. Then clips/s of the texture stylizer and of building pair views.

    python benchmarks/stylizer_check.py [--frames 16 --size 128 --batch 8]
"""

from __future__ import annotations

import argparse
import time

import torch

from stbias.stylization import TextureStylizer, make_pair_views
from stbias.stylization.check import acceptance_table, moving_square_clip
from stbias.stylization.texture import NAMED_STYLES


class FrameShiftControl(TextureStylizer):
    """A deliberately bad stylizer: texture styles, then a different shift on every frame."""

    name = "frame-shift control"

    def _stylize(self, clip01, styles, **context):
        out = super()._stylize(clip01, styles)
        shifts = [(0, 0), (3, -2), (-2, 3), (1, 4), (-4, -1), (2, 2), (-3, 0), (0, -3)]
        frames = [out[:, :, t].roll(shifts[t % 8], dims=(2, 3)) for t in range(out.shape[2])]
        return torch.stack(frames, dim=2)


def print_table(title: str, table: dict[str, dict[str, float]]) -> None:
    original = table.pop("original")["flow_rel_epe_true"]
    print(f"\n{title}")
    print(f"  Farneback on the unstyled clip vs true flow: rel. EPE {original:.3f}")
    head = (
        f"  {'style':<12} {'EPE/|f| other':>13} {'(max)':>6} {'vs orig':>8} {'vs true':>8} "
        f"{'MAD other':>9} {'(min)':>6} {'hist other':>10} {'(min)':>6} {'MAD orig':>8} "
        f"{'hist orig':>9}"
    )
    print(head)
    for name, r in table.items():
        print(
            f"  {name:<12} {r['flow_rel_epe']:>13.3f} {r['flow_rel_epe_max']:>6.3f} "
            f"{r['flow_rel_epe_original']:>8.3f} {r['flow_rel_epe_true']:>8.3f} "
            f"{r['mad']:>9.3f} {r['mad_min']:>6.3f} {r['hist']:>10.3f} {r['hist_min']:>6.3f} "
            f"{r['mad_original']:>8.3f} {r['hist_original']:>9.3f}"
        )


def throughput(fn, clips: int, repeats: int) -> float:
    fn()  # warm-up: loads style images, builds kernels
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return clips * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    stylizer = TextureStylizer(styles=list(NAMED_STYLES), num_random=3, seed=0)
    for frames, size in [(8, 64), (args.frames, args.size)]:
        clip, flow = moving_square_clip(frames=frames, size=size)
        title = f"acceptance check: clip {frames}x{size}x{size}, background (1, 0) px/frame, "
        title += "square (-2, 1) px/frame; EPE relative to the mean true flow magnitude"
        print_table(title, acceptance_table(stylizer, clip, flow))
    clip, flow = moving_square_clip(frames=args.frames, size=args.size)
    control = acceptance_table(FrameShiftControl(styles=["china", "coffee"]), clip, flow)
    print_table("control (must fail the flow criterion): per-frame shifts", control)

    threads = torch.get_num_threads()
    print(f"\nthroughput on CPU ({threads} torch thread(s)), batch of {args.batch} clips")
    for frames, size in [(8, 112), (16, 224)]:
        clips = torch.rand(args.batch, 3, frames, size, size)
        styles = torch.arange(args.batch) % stylizer.num_styles
        rate = throughput(lambda c=clips, s=styles: stylizer(c, s), args.batch, args.repeats)
        pairs = throughput(
            lambda c=clips: make_pair_views(c, stylizer, index=0, seed=0), args.batch, args.repeats
        )
        print(
            f"  {frames}x{size}x{size}: stylize {rate:7.2f} clips/s; "
            f"pair views (2 styles + shuffle) {pairs:7.2f} clips/s"
        )


if __name__ == "__main__":
    main()
