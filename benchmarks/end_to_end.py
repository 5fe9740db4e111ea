"""A probe from encoded video files against the bare forward pass over the same clips, decoded.

Run: ``python benchmarks/end_to_end.py [options] [overrides]``, e.g.
``python benchmarks/end_to_end.py dataset.num_workers=2 dataset.decode_threads=1``; the
overrides are the probe's own config keys (``model=``, ``dataset.*``, ``probe.batch_size=``,
``trainer=gpu``, ...). Defaults: ``i3d`` at 8x224x224 on this machine's CPU, 64 clips of 8
files, batch 8 (``probe.batch_size``): eight steps, so that filling the pipeline (the first batch,
decoded and stylized while the model has nothing to do) is ~3 % of the run, as against 6.5 % at
32 clips (four steps); a probe of a few hundred clips amortises it further.

The benchmark writes a folder of real encoded videos once (``--videos`` files of ``--frames``
frames: half VP9 webm at Something-Something v2's 427x240 and 12 fps, half H.264 mp4 at a common
Kinetics 640x360 and 30 fps, showing textured objects moving over a panning textured background)
and lists them in a ``video_folder`` CSV. Then, in one process:

* **probe from files**: the probe as ``task=probe`` runs it (``ProbeModule`` under
  ``Trainer.test``, its ``EvalData`` loader with the dataset's ``num_workers``, ``prefetch_factor``
  and ``pin_memory``): decode, resize and crop in the loader, two styles, packing, one forward
  pass of three views with taps on every layer, the pair statistics;
* **bare forward**: the forward passes alone of the same three views of the same clips, already
  decoded (uint8 in memory), channels-last as the probe feeds them, without hooks.

Both run ``--repeats`` times, alternating after a warm-up, and the fastest run of each counts.
Per stage (clips per second, each clip = 3 views): decode (a worker's ``dataset[i]``: seek,
decode, resize, crop, timed inside the workers during the probe and alone in this process),
stylize, pack, forward (with taps), statistics (the rest of the step), and the share of the probe
run the model waited for data (the time between one step's end and the next step's start).
With ``probe.stylize_on=loader`` the styles and the packing run in the workers (their time is
then the "stylize + pack, in the workers" row). The last line is the summary:
``end_to_end <model> <frames>x<size>: probe from files / bare forward = R ...``.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pytorch_lightning as pl  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402

from stbias.data import video_to_float  # noqa: E402
from stbias.data.loading import resolve_workers  # noqa: E402
from stbias.lit import probe as lit_probe  # noqa: E402
from stbias.lit.probe import (  # noqa: E402
    EvalData,
    ViewsInLoader,
    build_probe_module,
    channels_last,
    resolve_stylize_on,
)
from stbias.models.inputs import InputSpec, pack_inputs  # noqa: E402
from stbias.reporting import quiet_libraries  # noqa: E402
from stbias.tasks.dataset_setup import build_dataset  # noqa: E402
from stbias.tasks.model_setup import build_model  # noqa: E402
from stbias.tasks.run_config import plain  # noqa: E402
from stbias.tasks.trainer_setup import build_trainer  # noqa: E402

CONF = ROOT / "conf"
# (name, extension, codec, width, height, fps): SSv2 as released; Kinetics at YouTube's 360p
FORMATS = {
    "ssv2": (".webm", "libvpx-vp9", 427, 240, 12),
    "kinetics": (".mp4", "libx264", 640, 360, 30),
}
ENCODER_OPTIONS = {
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"},
    "libx264": {"preset": "veryfast"},
}


def scene(n: int, width: int, height: int, seed: int) -> np.ndarray:
    """``(n, height, width, 3)`` uint8: textured squares moving over a panning textured scene."""
    rng = np.random.default_rng(seed)
    import cv2

    big = rng.integers(0, 256, (height // 6 + 8, (width + 2 * n) // 6 + 8, 3), dtype=np.uint8)
    big = cv2.GaussianBlur(cv2.resize(big, None, fx=6, fy=6), (0, 0), 1.5)
    objects = []
    for _ in range(3):
        side = int(rng.integers(height // 6, height // 3))
        patch = cv2.resize(
            rng.integers(0, 256, (side // 4 + 1, side // 4 + 1, 3), dtype=np.uint8), (side, side)
        )
        start = rng.uniform([0, 0], [height - side, width - side])
        velocity = rng.uniform(-3, 3, 2)
        objects.append((patch, start, velocity))
    frames = np.empty((n, height, width, 3), np.uint8)
    for t in range(n):
        frame = big[:height, t : t + width].copy()  # the camera pans one pixel per frame
        for patch, start, velocity in objects:
            side = patch.shape[0]
            y, x = start + velocity * t
            y = int(abs((y % (2 * (height - side))) - (height - side)))  # bounce off the edges
            x = int(abs((x % (2 * (width - side))) - (width - side)))
            frame[y : y + side, x : x + side] = patch
        frames[t] = frame
    return frames


def write_videos(folder: Path, count: int, frames: int) -> Path:
    """``count`` videos (half of each format) and ``train.csv``; reused when already written."""
    import av

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(count):
        name = list(FORMATS)[k % len(FORMATS)]
        ext, codec, width, height, fps = FORMATS[name]
        path = folder / f"{name}_{k:03d}_{frames}{ext}"
        if not path.exists():
            tmp = path.with_name("tmp-" + path.name)
            with av.open(str(tmp), "w") as out:
                stream = out.add_stream(codec, rate=fps, options=ENCODER_OPTIONS[codec])
                stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                for frame in scene(frames, width, height, seed=k):
                    for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                        out.mux(packet)
                for packet in stream.encode():
                    out.mux(packet)
            os.replace(tmp, path)
        rows.append((path.name, k % 4))
    with open(folder / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "label"), *rows])
    return folder


class TimedClips(Dataset):
    """A dataset whose samples carry ``load_s``: the seconds their ``__getitem__`` took."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        start = time.perf_counter()
        sample = self.dataset[index]
        sample["load_s"] = time.perf_counter() - start
        return sample


class TimedViews(ViewsInLoader):
    """``probe.stylize_on=loader``: the views rendered in the workers, ``views_s`` their time."""

    def __call__(self, samples: list[dict]) -> dict:
        start = time.perf_counter()
        batch = super().__call__(samples)
        batch["views_s"] = torch.tensor(time.perf_counter() - start)
        return batch


class StageClock(pl.Callback):
    """Seconds per stage of the probe's steps, and how long each step waited for its batch."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = {}
        self.last_end = None

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def stage(self, name: str):
        self.sync()
        start = time.perf_counter()
        yield
        self.sync()
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            with self.stage(name):
                return fn(*args, **kwargs)

        return timed

    def on_test_epoch_start(self, trainer, module) -> None:
        self.start = self.last_end = time.perf_counter()

    def on_test_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0) -> None:
        self.seconds["wait"] = self.seconds.get("wait", 0.0) + time.perf_counter() - self.last_end
        self.seconds["load"] = self.seconds.get("load", 0.0) + float(batch["load_s"].sum())
        if "views_s" in batch:
            self.seconds["views"] = self.seconds.get("views", 0.0) + float(batch["views_s"])
        self.step_start = time.perf_counter()

    def on_test_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
        self.sync()
        self.last_end = time.perf_counter()
        self.seconds["step"] = self.seconds.get("step", 0.0) + self.last_end - self.step_start

    def on_test_epoch_end(self, trainer, module) -> None:
        self.seconds["total"] = time.perf_counter() - self.start


def compose_config(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


def run_probe(cfg, model, spec, dataset, device: torch.device) -> dict[str, float]:
    """Stage seconds of one probe over ``dataset`` as ``task=probe`` runs it."""
    layers, channels = plain(cfg.model.layers), plain(cfg.model.channels)
    module = build_probe_module(
        model, layers, spec, instantiate(cfg.stylization), channels=channels
    )
    clock = StageClock(device)
    workers = resolve_workers(cfg.probe.num_workers)
    stylize_on = resolve_stylize_on(str(cfg.probe.stylize_on), device.type, workers)
    collate = TimedViews(module.sampler, spec) if stylize_on == "loader" else None
    # the probe's own step, its stages timed from outside: the sampler renders float views, the
    # probe packs them (stbias.lit.probe.pack_inputs) and runs the forward pass
    module.features = clock.wrap("forward", module.features)
    module.sampler = clock.wrap("stylize", module.sampler)
    lit_probe.pack_inputs = clock.wrap("pack", pack_inputs)
    trainer = build_trainer(
        cfg.trainer,
        callbacks=[clock],
        fixed={"use_distributed_sampler": False, "enable_checkpointing": False},
        task="benchmark",
    )
    loader = {k: cfg.dataset.get(k) for k in ("prefetch_factor", "pin_memory")}
    loader["collate_fn"] = collate
    data = EvalData(TimedClips(dataset), int(cfg.probe.batch_size), cfg.probe.num_workers, **loader)
    try:
        trainer.test(module, datamodule=data, verbose=False)
    finally:
        lit_probe.pack_inputs = pack_inputs
    s = {"stylize": 0.0, "pack": 0.0, "views": 0.0, **clock.seconds}
    s["statistics"] = s["step"] - s["stylize"] - s["pack"] - s["forward"]
    if s["views"]:  # rendered in the workers: styles and packing, beside the forward pass
        s["stylize"], s["pack"] = s["views"], 0.0
    return s


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a Lightning ``precision`` setting (None: full precision)."""
    precision = str(precision)
    if precision.startswith("bf16") and "mixed" in precision:
        return torch.bfloat16
    if precision.startswith("16") and "mixed" in precision:
        return torch.float16
    return None


def bare_forward(
    model, spec, videos: torch.Tensor, batch: int, device: torch.device, dtype=None
) -> float:
    """Seconds of the forward passes of the three views per clip, clips already decoded (under
    autocast to ``dtype`` when given, as Lightning's mixed precision runs the probe)."""
    start = time.perf_counter()
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
    with torch.inference_mode(), autocast:
        for i in range(0, len(videos), batch):
            x = video_to_float(videos[i : i + batch].to(device))
            model(channels_last(pack_inputs(torch.cat([x, x, x]), spec)))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return time.perf_counter() - start


def parse(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=64, help="clips probed (views of the files)")
    parser.add_argument("--videos", type=int, default=8, help="video files written")
    parser.add_argument("--frames", type=int, default=300, help="frames per video file")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each; the fastest counts")
    parser.add_argument("--data", type=Path, default=ROOT / "outputs" / "benchmark_videos")
    parser.add_argument("--target", type=float, default=1.15, help="ratio to compare with")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="more overrides of the probe (e.g. 'dataset.num_workers=0 probe.stylize_on=loader'),"
        " timed in the same alternation; repeatable",
    )
    parser.add_argument("overrides", nargs="*", help="config overrides (model=..., dataset.*=...)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark; the ratio, the clip count and every stage's seconds."""
    args = parse(argv)
    quiet_libraries()
    folder = write_videos(args.data, args.videos, args.frames)
    views = max(-(-args.clips // args.videos), 1)
    base = [
        "model=i3d",
        "dataset=video_folder",
        "trainer=cpu",
        "logger=none",
        "trainer.enable_progress_bar=false",
        f"dataset.root={folder}",
        f"dataset.num_views={views}",
        *args.overrides,
    ]
    cfg = compose_config(base)
    spec = InputSpec.from_dict(plain(cfg.model.input))

    def clips_of(cfg):
        dataset = build_dataset(cfg.dataset, spec)
        return torch.utils.data.Subset(dataset, range(min(args.clips, len(dataset))))

    dataset = clips_of(cfg)
    variants = [(v, compose_config([*base, *v.split()])) for v in args.variant]
    variants = [(v, c, clips_of(c)) for v, c in variants]
    accelerator = str(cfg.trainer.accelerator)
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device("cuda" if accelerator in ("gpu", "cuda") else accelerator)
    model = build_model(cfg.model).eval().to(device)
    batch = int(cfg.probe.batch_size)
    dtype = autocast_dtype(cfg.trainer.precision)

    # decoded once in this process: the bare forward's input, and a worker's speed alone
    start = time.perf_counter()
    videos = torch.stack([dataset[i]["video"] for i in range(len(dataset))])
    decode_alone = time.perf_counter() - start
    n = len(videos)

    warm = videos[: min(batch, n)]
    bare_forward(model, spec, warm, batch, device, dtype)
    run_probe(cfg, model, spec, torch.utils.data.Subset(dataset, range(len(warm))), device)
    bare, probe, other = float("inf"), None, {v: float("inf") for v, _, _ in variants}
    for _ in range(args.repeats):
        bare = min(bare, bare_forward(model, spec, videos, batch, device, dtype))
        seconds = run_probe(cfg, model, spec, dataset, device)
        if probe is None or seconds["total"] < probe["total"]:
            probe = seconds
        for name, c, clips in variants:
            other[name] = min(other[name], run_probe(c, model, spec, clips, device)["total"])
    ratio = probe["total"] / bare

    workers = resolve_workers(cfg.probe.num_workers)
    d = cfg.dataset
    print(
        f"{cfg.model.name} {spec.frames}x{spec.size}x{spec.size} from {args.videos} files "
        f"({', '.join(f'{k} {v[2]}x{v[3]} {v[0][1:]}' for k, v in FORMATS.items())}, "
        f"{args.frames} frames): {n} clips x 3 views, batch {batch}, {device.type}, "
        f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cores, load "
        f"{os.getloadavg()[0]:.1f}"
    )
    print(
        f"settings: backend {dataset.dataset.backend}, decode_threads {d.decode_threads}, "
        f"num_workers {workers}, prefetch_factor {d.prefetch_factor}, pin_memory "
        f"{d.pin_memory}, stylize_on {cfg.probe.stylize_on} "
        f"({resolve_stylize_on(str(cfg.probe.stylize_on), device.type, workers)})"
    )
    rows = [
        ("decode, one worker alone", decode_alone),
        (f"decode, in the run ({workers} worker(s))", probe["load"]),
        ("stylize + pack, in the workers" if probe["views"] else "stylize", probe["stylize"]),
        ("pack", probe["pack"]),
        ("forward (3 views, taps)", probe["forward"]),
        ("statistics", probe["statistics"]),
        ("bare forward (3 views)", bare),
        ("probe from files", probe["total"]),
    ]
    print(f"{'stage':38s} {'seconds':>9s} {'clips/s':>9s}")
    for name, sec in rows:
        rate = f"{n / sec:9.2f}" if sec > 0 else f"{'-':>9s}"
        print(f"{name:38s} {sec:9.2f} {rate}")
    wait = probe["wait"] / probe["total"]
    print(f"{'waiting for data':38s} {probe['wait']:9.2f} {100 * wait:8.1f}% of the probe run")
    for name, seconds in other.items():
        print(f"variant {name}: probe from files {seconds:.2f} s, ratio {seconds / bare:.3f}")
    verdict = "within" if ratio <= args.target else "above"
    print(
        f"end_to_end {cfg.model.name} {spec.frames}x{spec.size}: probe from files / bare forward "
        f"= {ratio:.3f} ({verdict} {args.target}); data side {n / decode_alone:.2f} clips/s per "
        f"worker; model waits {100 * wait:.1f}%"
    )
    return {"ratio": ratio, "clips": n, "bare": bare, "decode_alone": decode_alone, **probe}


if __name__ == "__main__":
    main()
