"""`task=layers`: list a model's layer aliases with module path, channels and output shape."""

from __future__ import annotations

import copy
from typing import Any

import torch
from hydra.errors import InstantiationException
from omegaconf import OmegaConf, open_dict

from stbias.data.flow import two_stream_input
from stbias.errors import StbiasError
from stbias.models.inputs import InputSpec, pack_inputs, spec_shapes
from stbias.models.taps import capture, channels_of, suggest_layers
from stbias.tasks.model_setup import build_model, prepare_model


def _sized_model_config(model_cfg: Any, task_cfg: Any) -> Any:
    """A copy of the model config with the input size/frames the task asks for."""
    model_cfg = copy.deepcopy(model_cfg)
    size, frames = task_cfg.get("size"), task_cfg.get("frames")
    reduced = model_cfg.get("reduced")
    if task_cfg.get("reduced") and reduced is not None:
        size = size or reduced.get("size")
        frames = frames or reduced.get("frames")
    with open_dict(model_cfg):
        if size:
            model_cfg.input.size = int(size)
        if frames:
            model_cfg.input.frames = int(frames)
    return model_cfg


def _plain(node: Any) -> dict:
    if node is None:
        return {}
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)


def run(cfg: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Build the model, run one random clip of its input spec and print every alias.

    Returns the rows (`alias`, `path`, `channels`, `declared`, `shape`) and the model.
    """
    prepare_model(cfg, "task=layers")
    model_cfg = _sized_model_config(cfg.model, cfg.task)
    name = str(model_cfg.get("name", "model"))
    try:
        model = build_model(model_cfg).eval()
    except InstantiationException as err:
        # hydra wraps errors raised by the builder; show the user the builder's own message
        if isinstance(err.__cause__, StbiasError):
            raise err.__cause__ from None
        raise
    spec = InputSpec.from_dict(OmegaConf.to_container(model_cfg.input, resolve=True))
    generator = torch.Generator().manual_seed(int(cfg.get("seed", 0)))
    video = torch.rand(1, spec.channels, spec.frames, spec.size, spec.size, generator=generator)
    inputs = pack_inputs(two_stream_input(video) if spec.flow else video, spec)
    layers = _plain(model_cfg.get("layers"))
    declared = _plain(model_cfg.get("channels"))
    layout = str(model_cfg.get("layout", "cnn"))

    params = sum(p.numel() for p in model.parameters()) / 1e6
    shapes = ", ".join(str(s) for s in spec_shapes(spec))
    print(f"{name}: {params:.2f} M parameters, input {shapes}, layout {layout}")
    rows = []
    if layers:
        with torch.no_grad():
            outputs = capture(model, layers, inputs, model_name=name)
        width = max(len(a) for a in layers)
        path_width = max(len(p) for p in layers.values())
        for alias, path in layers.items():
            out = outputs[alias]
            row = {
                "alias": alias,
                "path": path,
                "channels": channels_of(out, layout),
                "declared": declared.get(alias),
                "shape": tuple(out.shape),
            }
            rows.append(row)
            note = ""
            if row["declared"] is not None and row["declared"] != row["channels"]:
                note = f"  (declared {row['declared']})"
            print(
                f"  {alias:<{width}}  {path:<{path_width}}  {row['channels']:>5} ch  "
                f"{row['shape']}{note}"
            )
    if not layers or name == "custom":
        depth = int(cfg.task.get("suggest_depth", 3))
        print(f"module paths of {name} (output shape for this input); choose with")
        print("  'model.layers={alias: path, ...}'  and set model.layout to match:")
        for path, kind, shape in suggest_layers(model, inputs, max_depth=depth):
            print(f"  {path:<40} {kind:<28} {shape}")
    return {"layers": rows}, {"model": model}
