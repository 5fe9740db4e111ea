"""Shared set-up of the probe benchmarks: a model config, clips in memory, a timed probe."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from stbias.lit.probe import build_probe_module, channels_last
from stbias.models.inputs import InputSpec, pack_inputs
from stbias.tasks.model_setup import build_model
from stbias.tasks.run_config import plain

CONF = Path(__file__).resolve().parents[1] / "conf"


def model_setup(name: str, *overrides: str):
    """(model, layers, channels, spec, sampler) for ``model=name`` at its configured input."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"model={name}", *overrides])
    model = build_model(cfg.model).eval()
    spec = InputSpec.from_dict(plain(cfg.model.input))
    return (
        model,
        plain(cfg.model.layers),
        plain(cfg.model.channels),
        spec,
        instantiate(cfg.stylization),
    )


def clips(spec: InputSpec, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` random uint8 clips ``(n, T, H, W, C)`` at the model's input size."""
    g = torch.Generator().manual_seed(seed)
    shape = (n, spec.frames, spec.size, spec.size, spec.channels)
    return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)


DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def time_probe(
    model, layers, channels, spec, sampler, videos, batch: int, device=None, dtype=None
) -> float:
    """Seconds for the probe's steps (stylization, packing, one forward, taps, statistics).

    On ``device`` (default CPU) under autocast to ``dtype`` (None: float32), as Lightning's mixed
    precision runs it; the pair statistics stay float64 whatever the dtype.
    """
    device = torch.device(device or "cpu")
    module = build_probe_module(model, layers, spec, sampler, channels=channels).to(device)
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode(), _autocast(device, dtype):
        for i in range(0, len(videos), batch):
            chunk = videos[i : i + batch].to(device)
            module.test_step({"video": chunk, "index": torch.arange(i, i + len(chunk))}, i)
    _sync(device)
    seconds = time.perf_counter() - start
    module.close()  # the layers' hooks off the model (the bare forward runs without them)
    return seconds


def time_forward(model, spec, videos, batch: int, device=None, dtype=None) -> float:
    """Seconds for the bare forward passes of the same 3 views per clip (no hooks, no styles),
    channels-last as the probe feeds them."""
    from stbias.data import video_to_float

    device = torch.device(device or "cpu")
    model.to(device)
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode(), _autocast(device, dtype):
        for i in range(0, len(videos), batch):
            x = video_to_float(videos[i : i + batch].to(device))
            x = torch.cat([x, x, x])
            packed = pack_inputs(x, spec)
            if isinstance(packed, (list, tuple)):
                model([channels_last(p) for p in packed])
            else:
                model(channels_last(packed))
    _sync(device)
    return time.perf_counter() - start
