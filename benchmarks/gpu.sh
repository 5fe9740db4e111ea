#!/usr/bin/env bash
# The GPU figures in one run (at most 8 minutes on one H100 or H200), printed as one table of
# ratios, each measured within its own run:
#   1. probe / bare forward of i3d 8x224x224 at batch 8, 16, 32, 64 in bf16 and fp16 autocast
#      (the pair statistics stay float64)            benchmarks/probe_overhead.py
#   2. probe from encoded video files / bare forward  benchmarks/end_to_end.py
#   3. batched temporal masks against a loop of single-clip searches on i3d_inception at its
#      native 64x224x224                               benchmarks/temporal_masks.py
#   4. stbias against the authors' procedure on i3d   benchmarks/vs_authors_procedure.py
#
#   bash benchmarks/gpu.sh               on a machine with a CUDA device
#   bash benchmarks/gpu.sh --cpu-smoke   the same steps on the CPU at tiny sizes (run by the tests)
#
# Every step has its own time limit (on a GPU 110 + 140 + 80 + 110 s: 7 min 20 s in all); a step
# that fails or runs out of time shows as such in the table and the others still run. The full output of each step is kept in $GPU_BENCH_LOGS
# (default: a new folder under /tmp), named in the last line.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
LOGS=${GPU_BENCH_LOGS:-$(mktemp -d /tmp/stbias-gpu-bench.XXXXXX)}
mkdir -p "$LOGS"

if [ "${1:-}" = "--cpu-smoke" ]; then
    TINY=(model.input.size=32 model.input.frames=4 model.input.sampling_rate=2)
    steps=(
        "probe_overhead|300|benchmarks/probe_overhead.py --device cpu --models i3d_tiny --batches 2 --dtypes bf16 --clips 2 --repeats 1 ${TINY[*]}"
        "end_to_end|300|benchmarks/end_to_end.py --clips 2 --videos 2 --frames 24 --repeats 1 --data $LOGS/videos model=i3d_tiny probe.batch_size=2 dataset.num_workers=1 ${TINY[*]}"
        "temporal_masks|300|benchmarks/temporal_masks.py --device cpu --models i3d_tiny --clips 2 --iterations 1 --frames 4 --size 32 --native="
        "vs_authors|300|benchmarks/vs_authors_procedure.py --device cpu --model i3d_tiny --pairs 2 --batch 2 --repeats 1"
    )
elif [ -n "${1:-}" ]; then
    echo "unknown option '$1'; valid: --cpu-smoke (or none, on a CUDA machine)" >&2
    exit 2
else
    if ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
        echo "no CUDA device here; run 'bash benchmarks/gpu.sh --cpu-smoke' on a CPU" >&2
        exit 2
    fi
    WORKERS=$(( $(nproc) - 1 ))
    steps=(
        "probe_overhead|110|benchmarks/probe_overhead.py --device cuda --models i3d --batches 8 16 32 64 --dtypes bf16 fp16 --clips 128 --repeats 2"
        "end_to_end|140|benchmarks/end_to_end.py --clips 192 --videos 16 --repeats 1 trainer=gpu trainer.precision=bf16-mixed probe.batch_size=32 dataset.num_workers=$WORKERS"
        "temporal_masks|80|benchmarks/temporal_masks.py --device cuda --models i3d_inception --native-input --native= --clips 8 --iterations 20"
        "vs_authors|110|benchmarks/vs_authors_procedure.py --device cuda --model i3d --pairs 32 --batch 8 --threads 4 --repeats 1"
    )
fi

for step in "${steps[@]}"; do
    IFS='|' read -r name limit command <<<"$step"
    echo "== $name ($limit s at most): $command" >&2
    # shellcheck disable=SC2086  # the command's words are meant to split
    timeout "$limit" "$PY" $command >"$LOGS/$name.log" 2>&1
    echo "$?" >"$LOGS/$name.rc"
done

"$PY" - "$LOGS" <<'EOF'
"""One table of the ratios the steps printed."""
import re
import sys
from pathlib import Path

logs = Path(sys.argv[1])
rows = []
for name in ("probe_overhead", "end_to_end", "temporal_masks", "vs_authors"):
    text = (logs / f"{name}.log").read_text(errors="replace")
    rc = int((logs / f"{name}.rc").read_text())
    found = []
    for line in text.splitlines():
        m = re.match(r"probe_overhead (\S+) (\S+) batch (\d+) (\S+) (\S+),.* ratio ([\d.]+)", line)
        if m:
            model, size, batch, dtype, device, ratio = m.groups()
            found.append(("probe / bare forward", f"{model} {size} batch {batch} {dtype}", ratio))
        m = re.match(r"end_to_end (\S+) (\S+): probe from files / bare forward = ([\d.]+)", line)
        if m:
            found.append(("probe from files / bare forward", f"{m[1]} {m[2]}", m[3]))
        m = re.match(r"temporal_masks (\S+) \((\S+),.*speedup ([\d.]+)x", line)
        if m:
            found.append(("loop of single-clip masks / batched", f"{m[1]} {m[2]}", m[3]))
        m = re.match(r"  stbias vs (authors' procedure \(.*?\)): ([\d.]+)x faster", line)
        if m:
            found.append((f"{m[1]} / stbias", "wall time", m[2]))
    if rc != 0 or not found:
        why = "ran out of time" if rc == 124 else f"failed (exit {rc})" if rc else "no figure"
        found.append((name, why, "-"))
    rows += found
print(f"{'ratio':<48} {'setting':<36} {'value':>7}")
for what, setting, value in rows:
    print(f"{what:<48} {setting:<36} {value:>7}")
print(f"full output: {logs}")
sys.exit(1 if any(value == "-" for _, _, value in rows) else 0)
EOF
