"""stbias's probe against the authors' released procedure (Kowal et al., CVPR'22) on one model.

Run: ``python benchmarks/vs_authors_procedure.py`` (``i3d`` at 8x224x224 with a few clips, then
``i3d_tiny`` with more); ``--model i3d_tiny --pairs 128`` for one setting.

The baseline re-implements what the authors' released code does (their ``main.py``, dataset
classes and ``dim_est``), written here from reading it:

* one run per stage: each run's forward stops after that stage and averages its output over time
  and space (their ``model(x, stage=k)``);
* every clip gets one factor at random: ``dynamic`` — the clip in style ``a`` and in style ``b``;
  ``static`` — the clip in style ``a`` and the same tensor with its frames in a random order
  (``torch.randperm``, the identity not excluded);
* the two members of the pairs go through the model as two separate forward passes (a batch of
  first members, then a batch of second members), with autograd on (their loop has no
  ``torch.no_grad``), contiguous tensors;
* every pooled feature is kept, and their estimator runs on the stacked arrays at the end
  (two passes in numpy: pooled covariance over the total variance, softmax with the residual
  score 1, ``int(p * N)`` dims).

stbias: one probe over all stages (``ProbeModule`` under ``Trainer.test``): per clip one forward
pass of three views (anchor, shuffled anchor, restyled clip: one static and one dynamic pair)
with hooks on every stage, streaming float64 sums. A favoured baseline (the same procedure in
``torch.inference_mode`` with channels-last inputs, as stbias feeds them) is timed too, so the
gain of the structure alone is visible.

Equal work: both produce ``--pairs`` pairs per factor. The baseline uses ``2 * pairs`` clips, the
factors a random balanced assignment (the authors draw each clip's factor independently, which
gives equal counts only on average); stbias uses the first ``pairs`` of those clips. The clips
are Places+Faces+MNIST clips at the model's input geometry, the styles the default texture
stylizer, the weights random (seeded, identical in every process). Each procedure runs in its own
process, after warm-up passes (both memory layouts, with and without autograd, every style), so
no procedure pays first-use costs; wall time covers sampling, styling, packing, forward passes
and the estimator; peak memory is the highest resident set size during the run above that at its
start (sampled every 2 ms). The scores differ only by sampling (different pairs); feeding the
baseline's kept features to stbias's estimator reproduces their estimator's numbers (printed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_SETTINGS = (("i3d", 4), ("i3d_tiny", 128))
BASELINE_FACTORS = ("dynamic", "static")  # their factor 0 (same motion) and 1 (same appearance)


class PeakRSS:
    """The highest resident set size (bytes) while the context is open, sampled every 2 ms."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.start = self.peak = 0
        self._stop = threading.Event()

    def rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self.page

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self.rss()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def setup(name: str, num_clips: int, seed: int = 0):
    """Model (seeded random weights), its stages, input spec, pair sampler and uint8 clips."""
    from hydra.utils import instantiate

    from stbias.config import compose
    from stbias.tasks.dataset_setup import build_dataset
    from stbias.tasks.model_setup import build_model
    from stbias.tasks.run_config import plain

    cfg = compose([f"model={name}", "dataset=pfm", "dataset.num_places=8", "dataset.num_motions=8"])
    torch.manual_seed(seed)
    model = build_model(cfg.model).eval()
    from stbias.models.inputs import InputSpec

    spec = InputSpec.from_dict(plain(cfg.model.input))
    dataset = build_dataset(cfg.dataset, spec, split="val", num_samples=num_clips)
    videos = torch.stack([dataset[i]["video"] for i in range(num_clips)])
    layers = plain(cfg.model.layers)
    return model, layers, plain(cfg.model.channels), spec, instantiate(cfg.stylization), videos


def authors_estimator(za: np.ndarray, zb: np.ndarray, factors: np.ndarray) -> dict:
    """Their estimator on stacked features ``(N, C)``: raw scores, dims and percent."""
    zall = np.concatenate([za, zb], 0)
    total = np.sum(np.mean((zall - zall.mean(0, keepdims=True)) ** 2, 0))
    scores = []
    for code in range(len(BASELINE_FACTORS)):
        a, b = za[factors == code], zb[factors == code]
        m = 0.5 * (a.mean(0, keepdims=True) + b.mean(0, keepdims=True))
        scores.append(float(np.sum(np.mean((a - m) * (b - m), 0)) / total))
    s = np.array([*scores, 1.0])
    p = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
    units = za.shape[1]
    dims = [int(v * units) for v in p]
    dims[-1] = units - sum(dims[:-1])
    return {
        "scores": dict(zip(BASELINE_FACTORS, scores)),
        "dims": dict(zip((*BASELINE_FACTORS, "residual"), dims)),
        "percent": {
            k: round(100 * d / units, 1) for k, d in zip((*BASELINE_FACTORS, "residual"), dims)
        },
    }


def stage_forward(model, path: str, x: torch.Tensor, layout: str = "cnn") -> torch.Tensor:
    """The forward pass cut after the module at ``path``, its output averaged to ``(B, C)``."""
    from stbias.models.taps import LayerTap, pool_features

    tap = LayerTap(model, {"stage": path}, detach=False, stop_early=True)
    with tap:
        model(x)
    return pool_features(tap.outputs["stage"], layout)


def run_baseline(
    model, layers, spec, sampler, videos, pairs, batch, favoured, seed=0, device="cpu"
):
    """The authors' procedure: one run per stage, separate forward passes, stacked features."""
    from stbias.data import video_to_float
    from stbias.models.inputs import pack_inputs

    stylizer = sampler.stylizer
    n = 2 * pairs
    results, kept = {}, {}
    for alias, path in layers.items():
        # a run: its own random draws (the authors seed nothing per run), its own pass over the data
        rng = np.random.default_rng([seed, len(kept)])
        factors = rng.permutation(np.repeat(np.arange(2), pairs))
        first, second = [], []
        for start in range(0, n, batch):
            clip01 = video_to_float(videos[start : start + batch].to(device))
            code = torch.as_tensor(factors[start : start + batch])
            styles = [rng.choice(stylizer.num_styles, 2, replace=False) for _ in range(len(code))]
            a = torch.tensor([int(s[0]) for s in styles])
            b = torch.tensor([int(s[1]) for s in styles])
            x1 = pack_inputs(stylizer(clip01, a), spec)
            x2 = x1.clone()
            dyn = code == 0
            if bool(dyn.any()):
                x2[dyn] = pack_inputs(stylizer(clip01[dyn], b[dyn]), spec)
            for k in torch.nonzero(~dyn).flatten().tolist():
                x2[k] = x1[k][:, torch.randperm(x1.shape[2])]
            if favoured:
                x1 = x1.contiguous(memory_format=torch.channels_last_3d)
                x2 = x2.contiguous(memory_format=torch.channels_last_3d)
                with torch.inference_mode():
                    o1, o2 = stage_forward(model, path, x1), stage_forward(model, path, x2)
            else:
                o1, o2 = stage_forward(model, path, x1), stage_forward(model, path, x2)
            first.append(o1.detach().cpu().numpy())
            second.append(o2.detach().cpu().numpy())
        za, zb = np.concatenate(first), np.concatenate(second)
        kept[alias] = (za, zb, factors)
        results[alias] = authors_estimator(za, zb, factors)
        results[alias]["n_pairs"] = {
            f: int((factors == c).sum()) for c, f in enumerate(BASELINE_FACTORS)
        }
    return results, kept


def run_stbias(model, layers, channels, spec, sampler, videos, pairs, batch, device="cpu"):
    """One stbias probe over every stage, as ``task=probe`` runs it (``Trainer.test``)."""
    import pytorch_lightning as pl

    from stbias.lit.probe import EvalData, build_probe_module

    class Clips(torch.utils.data.Dataset):
        def __len__(self):
            return pairs

        def __getitem__(self, i):
            return {"video": videos[i], "index": i}

    module = build_probe_module(model, layers, spec, sampler, channels=channels)
    trainer = pl.Trainer(
        accelerator="gpu" if torch.device(device).type == "cuda" else "cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        use_distributed_sampler=False,
    )
    trainer.test(module, datamodule=EvalData(Clips(), batch), verbose=False)
    return {
        alias: {k: module.results[alias][k] for k in ("scores", "dims", "percent", "n_pairs")}
        for alias in layers
    }


def child(args) -> None:
    """One procedure in this process; prints its timing, memory and numbers as JSON."""
    import logging

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    model, layers, channels, spec, sampler, videos = setup(args.model, 2 * args.pairs)
    model.to(args.device)
    # every import before the clock starts: only the procedures are timed
    import pytorch_lightning  # noqa: F401

    import stbias.lit.probe  # noqa: F401
    import stbias.models.taps  # noqa: F401
    from stbias.data import video_to_float
    from stbias.models.inputs import pack_inputs

    # warm-up, so that no procedure pays first-use costs: convolution kernels for both memory
    # layouts, with and without autograd, and the styles' photographs
    clip01 = video_to_float(videos[: args.batch].to(args.device))
    x = pack_inputs(clip01, spec)
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            model(x)
            model(x.contiguous(memory_format=torch.channels_last_3d))
    with torch.inference_mode():
        for style in range(sampler.stylizer.num_styles):
            sampler.stylizer(clip01[:1], style)
    start = time.perf_counter()
    with PeakRSS() as memory:
        if args.child == "stbias":
            results = run_stbias(
                model, layers, channels, spec, sampler, videos, args.pairs, args.batch, args.device
            )
            check = None
        else:
            favoured = args.child == "favoured"
            results, kept = run_baseline(
                model,
                layers,
                spec,
                sampler,
                videos,
                args.pairs,
                args.batch,
                favoured,
                device=args.device,
            )
    seconds = time.perf_counter() - start
    if args.child != "stbias":
        from stbias.metrics import PairStatistics

        # their estimator (in float64) and stbias's on the same kept features
        check = 0.0
        for za, zb, factors in kept.values():
            za, zb = za.astype(np.float64), zb.astype(np.float64)
            theirs = authors_estimator(za, zb, factors)
            stats = PairStatistics(za.shape[1])
            names = [BASELINE_FACTORS[int(c)] for c in factors]
            stats.update(torch.from_numpy(za), torch.from_numpy(zb), names)
            ours = stats.report()
            for factor in BASELINE_FACTORS:
                check = max(check, abs(ours["scores"][factor] - theirs["scores"][factor]))
            if ours["dims"] != theirs["dims"]:
                check = float("inf")
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_mb": memory.peak / 2**20,
                "extra_mb": (memory.peak - memory.start) / 2**20,
                "results": results,
                "estimator_check": check,
            }
        )
    )


def measure(
    model: str, pairs: int, batch: int, threads: int, procedure: str, device: str = "cpu"
) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        procedure,
        "--model",
        model,
        "--pairs",
        str(pairs),
        "--batch",
        str(batch),
        "--threads",
        str(threads),
        "--device",
        device,
    ]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"{procedure} on {model} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(
    model: str, pairs: int, batch: int, threads: int, repeats: int, device: str = "cpu"
) -> None:
    runs: dict[str, dict] = {}
    for _ in range(repeats):  # alternating; the fastest run of each counts (least disturbed)
        for procedure in ("stbias", "baseline", "favoured"):
            run = measure(model, pairs, batch, threads, procedure, device)
            if procedure not in runs or run["seconds"] < runs[procedure]["seconds"]:
                runs[procedure] = run
    ours, theirs, fav = runs["stbias"], runs["baseline"], runs["favoured"]
    stages = list(ours["results"])
    print(
        f"\n{model}: {len(stages)} stages ({', '.join(stages)}), {pairs} pairs per factor "
        f"(baseline {2 * pairs} clips, stbias {pairs}), batch {batch} clips, {threads} thread(s), "
        f"{device}, "
        f"fastest of {repeats} runs each"
    )
    counts = {
        label: {
            f"{stage}": "/".join(str(run["results"][stage]["n_pairs"][f]) for f in BASELINE_FACTORS)
            for stage in stages
        }
        for label, run in (("authors", theirs), ("stbias", ours))
    }
    print(f"  dynamic/static pairs per stage: {counts}")
    print(f"  {'procedure':<44} {'wall s':>8} {'peak MB':>8} {'extra MB':>9}")
    rows = (
        ("authors' procedure (as released)", theirs),
        ("authors' procedure (inference mode, ch-last)", fav),
        ("stbias probe (one pass, all stages)", ours),
    )
    for label, run in rows:
        print(f"  {label:<44} {run['seconds']:8.2f} {run['peak_mb']:8.0f} {run['extra_mb']:9.1f}")
    for label, run in rows[:2]:
        print(
            f"  stbias vs {label}: {run['seconds'] / ours['seconds']:.2f}x faster, "
            "peak extra memory ratio (theirs / stbias) "
            f"{run['extra_mb'] / max(ours['extra_mb'], 1e-9):.2f}"
        )
    check = max(theirs["estimator_check"], fav["estimator_check"])
    print(
        f"  stbias's estimator on the baseline's kept features: max |score difference| {check:.1e}"
    )
    print(
        f"  {'stage':<8} {'procedure':<10} {'S_dyn':>7} {'S_stat':>7} "
        f"{'dyn%':>6} {'stat%':>6} {'res%':>6}"
    )
    for stage in stages:
        for label, res in (
            ("authors", theirs["results"][stage]),
            ("stbias", ours["results"][stage]),
        ):
            s, p = res["scores"], res["percent"]
            print(
                f"  {stage:<8} {label:<10} {s['dynamic']:7.3f} {s['static']:7.3f} "
                f"{p['dynamic']:6.1f} {p['static']:6.1f} {p['residual']:6.1f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="one model (default: i3d, then i3d_tiny)")
    parser.add_argument("--pairs", type=int, help="pairs per factor (default: i3d 4, i3d_tiny 128)")
    parser.add_argument("--batch", type=int, default=2, help="clips per step (authors: 2)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each procedure")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--child", choices=("stbias", "baseline", "favoured"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    settings = DEFAULT_SETTINGS
    if args.model:
        settings = ((args.model, args.pairs or dict(DEFAULT_SETTINGS).get(args.model, 16)),)
    elif args.pairs:
        settings = tuple((m, args.pairs) for m, _ in DEFAULT_SETTINGS)
    for model, pairs in settings:
        report(model, pairs, args.batch, args.threads, args.repeats, args.device)


if __name__ == "__main__":
    main()
