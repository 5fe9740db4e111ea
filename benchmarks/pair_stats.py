"""Pair-statistics engine: update throughput at C = 2048 and peak memory against pair count.

Run: ``python benchmarks/pair_stats.py``. Each memory figure comes from a fresh process that
streams pairs in batches of 256 and reports its peak resident memory above the level it had after
one warm-up batch; the ratio of the 100k-pair to the 1k-pair figure shows whether memory grows
with the number of pairs (storing the features instead would need the last column).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import torch

from stbias.metrics import PairStatistics

C = 2048
BATCH = 256


def throughput(bootstrap: int, batch: int = 64, seconds: float = 3.0) -> float:
    """Pairs per second through ``update`` for ``(batch, C)`` float32 features on CPU."""
    metric = PairStatistics(C, bootstrap=bootstrap)
    z1, z2 = torch.randn(batch, C), torch.randn(batch, C)
    factor = ["dynamic", "static"] * (batch // 2)
    metric.update(z1, z2, factor)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        metric.update(z1, z2, factor)
        done += batch
    return done / (time.perf_counter() - start)


def peak_memory_child(n_pairs: int) -> None:
    torch.manual_seed(0)
    metric = PairStatistics(C, bootstrap=0)
    factor = ["dynamic", "static"] * (BATCH // 2)
    metric.update(torch.randn(BATCH, C), torch.randn(BATCH, C), factor)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(max(n_pairs // BATCH - 1, 0)):
        metric.update(torch.randn(BATCH, C), torch.randn(BATCH, C), factor)
    metric.compute()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"delta_mib": (peak - base) / 1024, "peak_mib": peak / 1024}))


def peak_memory(n_pairs: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(n_pairs)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    torch.set_num_threads(1)
    print(f"PairStatistics, C = {C}, one CPU thread")
    for bootstrap in (0, 100):
        print(
            f"  update throughput, bootstrap={bootstrap:<3d}: {throughput(bootstrap):10.0f} pairs/s"
        )
    small, large = peak_memory(1_000), peak_memory(100_000)
    stored = 100_000 * C * 2 * 4 / 2**20
    for label, res in (("  1k", small), ("100k", large)):
        print(
            f"  peak RSS {label} pairs: {res['peak_mib']:8.1f} MiB"
            f" (+{res['delta_mib']:.1f} after warm-up)"
        )
    print(f"  ratio 100k / 1k peak RSS: {large['peak_mib'] / small['peak_mib']:.3f}")
    print(f"  (keeping 100k pairs of float32 features would need {stored:.0f} MiB)")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        torch.set_num_threads(1)
        peak_memory_child(int(sys.argv[2]))
    else:
        main()
