"""Named-layer access: resolve aliases to modules, capture their outputs, pool them to (B, C).

A model declares its probe points as `alias -> path`. A path is a dotted module path as in
`model.get_submodule` (`blocks.4`, `layer4`, `blocks.1.multipathway_blocks.0`), optionally
followed by `[i]` to take element `i` of a tuple/list output: pytorchvideo and torchvision MViT
blocks return `(tokens, thw)`, hence `blocks.3[0]`; SlowFast fusion returns `[slow, fast]`,
hence `blocks.1.multipathway_fusion[0]` for the slow pathway after fusion.

Output layouts (declared per model as `layout`):

* `cnn` — `(B, C, T, H, W)` (or any `(B, C, ...)`), pooled over every axis after C.
* `channels_last` — `(B, ..., C)`: `(B, T, H, W, C)` (torchvision Swin3D stages), or a model
  whose taps mix such maps with `(B, N, C)` tokens (VisTR), pooled over the middle axes.
* `tokens` — `(B, N, C)` token sequences without a class token, pooled over N.
* `tokens_cls` — `(B, 1 + N, C)` with the class token first and the N = T'·H'·W' patch tokens
  after it in (t, h, w) raster order (pytorchvideo and torchvision MViT); the class token is
  left out of the average unless `include_cls=True`.

An output that is a 1-tuple `(tensor,)` is unwrapped (Hugging Face blocks in some versions).
A 2-D output `(B, C)` is already pooled and passes through unchanged whatever the layout.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from stbias.errors import StbiasError
from stbias.models.inputs import InputSpec, pack_inputs

LAYOUTS = ("cnn", "channels_last", "tokens", "tokens_cls")
_PATH = re.compile(r"^(?P<module>[A-Za-z0-9_.]*?)(?P<index>(\[\d+\])*)$")


def parse_path(path: str) -> tuple[str, tuple[int, ...]]:
    """Split `blocks.3[0]` into the module path `blocks.3` and output indices `(0,)`."""
    match = _PATH.match(str(path).strip())
    if match is None:
        raise StbiasError(
            f"bad layer path {path!r}; write a dotted module path, optionally with [i] to take "
            "element i of a tuple output, e.g. 'blocks.4' or 'blocks.3[0]'"
        )
    indices = tuple(int(i) for i in re.findall(r"\[(\d+)\]", match.group("index")))
    return match.group("module"), indices


def get_module(model: nn.Module, path: str, model_name: str = "model") -> nn.Module:
    """Return the submodule at a dotted `path` ('' is the model), or explain what exists."""
    module = model
    walked: list[str] = []
    for part in [p for p in path.split(".") if p]:
        children = dict(module.named_children())
        if part not in children:
            where = ".".join(walked) or "the model's top level"
            valid = ", ".join(children) or "none (a leaf module)"
            raise StbiasError(
                f"no module {part!r} under {where} (layer path {path!r} of {model_name}); "
                f"children there: {valid}"
            )
        module = children[part]
        walked.append(part)
    return module


def select_layers(
    layers: Mapping[str, str], names: Iterable[str] | None = None, model_name: str = "model"
) -> dict[str, str]:
    """Pick `names` (all when None) out of a model's `alias -> path` mapping, checking each."""
    layers = {str(k): str(v) for k, v in layers.items()}
    if names is None:
        return layers
    if isinstance(names, str):
        names = [names]
    chosen = {}
    for name in names:
        if name not in layers:
            valid = ", ".join(layers) or "none declared (set model.layers)"
            raise StbiasError(f"unknown layer {name!r}; layers of {model_name}: {valid}")
        chosen[name] = layers[name]
    return chosen


def channels_of(x: torch.Tensor, layout: str = "cnn") -> int:
    """The channel (unit) count of one layer output in the given layout."""
    _check_layout(layout)
    if x.ndim == 2 or layout == "cnn":
        return int(x.shape[1])
    return int(x.shape[-1])


def pool_features(x: torch.Tensor, layout: str = "cnn", include_cls: bool = False) -> torch.Tensor:
    """Global-average-pool one layer output to `(B, C)`; see the module docstring for layouts."""
    _check_layout(layout)
    if x.ndim == 2:
        return x
    if x.ndim < 3:
        raise StbiasError(f"cannot pool a layer output of shape {tuple(x.shape)} to (B, C)")
    if layout == "cnn":
        return x.flatten(2).mean(-1)
    if layout == "channels_last":
        return x.flatten(1, -2).mean(1)
    if x.ndim != 3:
        raise StbiasError(f"layout {layout!r} needs (B, N, C) tokens, got shape {tuple(x.shape)}")
    if layout == "tokens_cls" and not include_cls:
        if x.shape[1] < 2:
            raise StbiasError(f"tokens of shape {tuple(x.shape)} hold no patch token after cls")
        x = x[:, 1:]
    return x.mean(1)


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise StbiasError(f"unknown layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}")


class _StopForward(Exception):
    """Raised from a hook once every requested layer is captured, to skip the rest."""


class LayerTap:
    """Capture the outputs of named layers during a forward pass (a context manager).

    Hooks are registered on entry and always removed on exit, also when the forward raises.
    After the forward, `outputs` maps each alias to its output tensor. Tap modules that run
    once per forward: a module called several times (a shared activation) keeps its last call.

    Example:
        >>> with LayerTap(model, {"res4": "blocks.4", "res5": "blocks.5"}) as tap:
        ...     model(x)
        >>> tap.outputs["res5"].shape  # (B, C, T, H, W)
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Mapping[str, str],
        model_name: str = "model",
        detach: bool = True,
        stop_early: bool = False,
    ):
        self.model = model
        self.layers = {str(k): str(v) for k, v in layers.items()}
        self.model_name = model_name
        self.detach = detach
        self.stop_early = stop_early
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []
        self._targets = []
        for alias, path in self.layers.items():
            module_path, indices = parse_path(path)
            self._targets.append((alias, path, get_module(model, module_path, model_name), indices))

    def _hook(self, alias: str, path: str, indices: Sequence[int]):
        def hook(module, args, output):
            value = layer_output(output, indices, f"layer {alias!r} ({path}) of {self.model_name}")
            if not torch.is_tensor(value):
                raise StbiasError(self._not_a_tensor(alias, path, value))
            self.outputs[alias] = value.detach() if self.detach else value
            if self.stop_early and len(self.outputs) == len(self._targets):
                raise _StopForward

        return hook

    def _not_a_tensor(self, alias: str, path: str, value: Any) -> str:
        message = f"layer {alias!r} ({path}) of {self.model_name} returns {_describe(value)}"
        if isinstance(value, (list, tuple)) and value and torch.is_tensor(value[0]):
            others = [a for a in self.layers if a != alias]
            message += (
                "; a list output (one tensor per pathway, as in SlowFast) cannot be pooled as one "
                f"layer: tap one element with '{path}[0]' or use the per-pathway aliases"
            )
            if others:
                message += f" ({', '.join(others)})"
        return message

    def attach(self) -> LayerTap:
        """Register the hooks (once: a tap already attached keeps its hooks); returns self.

        A tap attached for a whole run (the probe's) serves every forward pass through
        :meth:`run`; :meth:`remove` takes the hooks off again.
        """
        if self._handles:
            return self
        try:
            for alias, path, module, indices in self._targets:
                self._handles.append(module.register_forward_hook(self._hook(alias, path, indices)))
        except BaseException:
            self.remove()
            raise
        return self

    @property
    def attached(self) -> bool:
        """Whether the hooks are registered."""
        return bool(self._handles)

    def run(self, inputs: Any) -> dict[str, torch.Tensor]:
        """One forward pass of ``inputs`` through the attached hooks: every layer's output.

        With ``stop_early`` the forward ends once every layer is captured.
        """
        if not self._handles:
            raise StbiasError("LayerTap.run needs attached hooks: call attach() first")
        self.outputs = {}
        try:
            self.model(inputs)
        except _StopForward:
            pass
        missing = [a for a in self.layers if a not in self.outputs]
        if missing:
            raise StbiasError(
                f"layer(s) {', '.join(missing)} of {self.model_name} never ran in the forward pass"
            )
        outputs = {alias: self.outputs[alias] for alias in self.layers}
        self.outputs = {}
        return outputs

    def __enter__(self) -> LayerTap:
        self.outputs = {}
        return self.attach()

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.remove()
        return exc_type is _StopForward

    def remove(self) -> None:
        """Remove every hook this tap registered."""
        while self._handles:
            self._handles.pop().remove()


def layer_output(output: Any, indices: Sequence[int], where: str) -> Any:
    """The part of a module's ``output`` that a layer path's ``[i]`` indices select.

    A 1-tuple holding a tensor is that tensor (some libraries wrap block outputs as
    ``(hidden,)``). Anything else that is not a tensor comes back as it is, for the caller's
    message; an index into something without that element is an error naming ``where``.
    """
    value = output
    for i in indices:
        if not isinstance(value, (list, tuple)) or i >= len(value):
            described = _describe(value)
            raise StbiasError(f"{where} takes element [{i}] of an output that is {described}")
        value = value[i]
    if isinstance(value, (list, tuple)) and len(value) == 1 and torch.is_tensor(value[0]):
        value = value[0]
    return value


def _describe(value: Any) -> str:
    if torch.is_tensor(value):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple)):
        parts = ", ".join(_describe(v) for v in value)
        return f"a {type(value).__name__} of {len(value)} ({parts})"
    return f"a {type(value).__name__}"


def capture(
    model: nn.Module,
    layers: Mapping[str, str],
    inputs: Any,
    model_name: str = "model",
    stop_early: bool = True,
) -> dict[str, torch.Tensor]:
    """Run one forward pass of `inputs` and return every tapped layer's output.

    With `stop_early` the forward is cut as soon as every requested layer has been seen, so
    classifier heads that come after the last tap are never run.
    """
    tap = LayerTap(model, layers, model_name=model_name, stop_early=stop_early).attach()
    try:
        return tap.run(inputs)
    finally:
        tap.remove()


def pooled_features(
    model: nn.Module,
    layers: Mapping[str, str],
    inputs: Any,
    layout: str = "cnn",
    include_cls: bool = False,
    model_name: str = "model",
) -> dict[str, torch.Tensor]:
    """One forward pass; every tapped layer pooled to `(B, C)`.

    Registers and removes the hooks around the pass; a loop over many batches attaches one
    :class:`LayerTap` for all of them instead (see :func:`pool_outputs`).
    """
    outputs = capture(model, layers, inputs, model_name=model_name)
    return pool_outputs(outputs, layout, include_cls)


def pool_outputs(
    outputs: Mapping[str, torch.Tensor], layout: str = "cnn", include_cls: bool = False
) -> dict[str, torch.Tensor]:
    """Every captured layer output pooled to `(B, C)`."""
    return {a: pool_features(x, layout, include_cls=include_cls) for a, x in outputs.items()}


def suggest_layers(
    model: nn.Module, inputs: Any, max_depth: int = 3
) -> list[tuple[str, str, tuple[int, ...]]]:
    """List module paths (up to `max_depth` dots deep) whose output is a tensor, in run order.

    Returns `(path, class name, output shape)` rows; tuple outputs whose first element is a
    tensor are listed as `path[0]`.
    """
    rows: list[tuple[str, str, tuple[int, ...]]] = []
    handles = []

    def make(name: str):
        def hook(module, args, output):
            if torch.is_tensor(output):
                rows.append((name, type(module).__name__, tuple(output.shape)))
            elif isinstance(output, (list, tuple)) and output and torch.is_tensor(output[0]):
                for i, item in enumerate(output):
                    if torch.is_tensor(item):
                        rows.append((f"{name}[{i}]", type(module).__name__, tuple(item.shape)))

        return hook

    try:
        for name, module in model.named_modules():
            if name and name.count(".") < max_depth:
                handles.append(module.register_forward_hook(make(name)))
        with torch.no_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return rows


def infer_channels(
    model: Any, layers: dict[str, str], spec: InputSpec, layout: str, name: str
) -> dict[str, int]:
    """Channel counts of layers a config does not declare, from one forward pass of a clip."""
    clip = torch.rand(1, spec.channels, spec.frames, spec.size, spec.size)
    if spec.flow:  # any [rgb, flow image] pair of the right shapes gives the channel counts
        clip = [clip[:, :, :-1], torch.rand(1, 3, spec.frames - 1, spec.size, spec.size)]
    with torch.no_grad():
        outputs = capture(model.eval(), layers, pack_inputs(clip, spec), model_name=name)
    return {alias: channels_of(out, layout) for alias, out in outputs.items()}
