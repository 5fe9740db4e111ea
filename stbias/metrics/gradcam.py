"""Grad-CAM per time step (Mänttäri et al., ACCV'20, Eq. 2; docs/measures.md).

For a layer with activations ``A^k_{ijt}`` (channel ``k``, position ``i, j``, time step ``t``)
and the target class's logit ``y_c``:

    L_{ijt} = ReLU(Σ_k w_{kt} A^k_{ijt}),    w_{kt} = mean_{ij} ∂y_c / ∂A^k_{ijt}

then upsampled trilinearly (time, height, width) to the input clip and min–max normalised per
frame, ``(L − min) / (max − min)``, with flat frames told by a tolerance relative to the frame's
own values (:func:`normalize_maps`), so that the maps do not depend on the scale of the target
score: multiplying the logits by any positive constant leaves them unchanged. Options:
``weights="time_mean"`` averages the gradient over time too (one weight per channel: Captum's
``LayerGradCam``, pytorch-grad-cam and the authors' I3D code), ``target="softmax"``
differentiates the softmax score instead of the logit, ``time="repeat"`` repeats each layer time
step over the frames it covers (spatial bilinear upsampling), ``normalize="clip"`` normalises over
the whole clip (``"none"`` keeps raw values).

Any layer alias of any classifier works: CNN layouts ``(B, C, T, H, W)``, channels-last
``(B, T, H, W, C)``, and transformer tokens ``(B, [1 +] N, C)`` reshaped to their
``(T', H', W')`` grid (``token_order`` ``thw`` or ``hwt``; the grid inferred from the token count
and the clip, or given). Gradients are captured with a tensor hook on the layer's output and the
activations copied when the layer runs, so in-place operations after the layer change neither.
The hooks are removed in ``finally``. One backward pass per batch: the clips' target scores are
summed, and in eval mode no clip's score depends on another clip.

Functional API: :func:`to_grid`, :func:`infer_grid`, :func:`gradcam_maps`, :func:`upsample`,
:func:`normalize_maps`. Object API: ``GradCAM(model, layer="blocks.4", ...).run(clips)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stbias.errors import StbiasError
from stbias.metrics.masks import check_classes
from stbias.models.taps import LAYOUTS, get_module, layer_output, parse_path

WEIGHTS = ("time", "time_mean")
TARGETS = ("logit", "softmax")
TIME_MODES = ("interpolate", "repeat")
NORMALIZE = ("frame", "clip", "none")
TOKEN_ORDERS = ("thw", "hwt")
# flat-frame tolerance of the normalisation, relative to the frame's largest absolute value: a few
# float32 rounding steps (2^-23 each), far below any contrast a map could show
DEFAULT_EPS = 1e-6


def _choice(name: str, value: str, valid: Sequence[str]) -> str:
    if value not in valid:
        raise StbiasError(f"unknown Grad-CAM {name} {value!r}; valid: {', '.join(valid)}")
    return value


def infer_grid(tokens: int, frames: int, height: int, width: int) -> tuple[int, int, int]:
    """The ``(T', H', W')`` grid of ``tokens`` patch tokens of a ``frames x height x width`` clip.

    ``T'`` divides ``frames`` and the spatial grid keeps the frame's aspect ratio; of the grids
    that fit, the one with the most time steps (video transformers rarely pool time more than
    space). Give the grid explicitly where that is not the model's.
    """
    for t in range(frames, 0, -1):
        if frames % t or tokens % t:
            continue
        spatial = tokens // t
        h = round(math.sqrt(spatial * height / width))
        if h > 0 and spatial % h == 0:
            w = spatial // h
            if h * width == w * height:
                return t, h, w
    raise StbiasError(
        f"cannot lay {tokens} tokens out on a (T', H', W') grid of a {frames}x{height}x{width} "
        "clip; give it as grid=[T', H', W'] (metric.grid)"
    )


def to_grid(
    x: Tensor,
    layout: str = "cnn",
    grid: Sequence[int] | None = None,
    token_order: str = "thw",
    clip_shape: Sequence[int] | None = None,
) -> Tensor:
    """A layer output as ``(B, C, T', H', W')``.

    Args:
        x: the output, in ``layout`` (see :mod:`stbias.models.taps`).
        layout: ``cnn``, ``channels_last``, ``tokens`` or ``tokens_cls`` (class token first,
            left out).
        grid: ``(T', H', W')`` of token layouts; None: :func:`infer_grid` from ``clip_shape``.
        token_order: order of the patch tokens, ``thw`` (time slowest) or ``hwt`` (time fastest).
        clip_shape: ``(T, H, W)`` of the input clip (needed to infer a token grid).
    """
    if layout not in LAYOUTS:
        raise StbiasError(f"unknown layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}")
    _choice("token_order", token_order, TOKEN_ORDERS)
    if layout == "cnn":
        if x.ndim != 5:
            raise StbiasError(
                f"Grad-CAM per time step needs a (B, C, T, H, W) layer output, got shape "
                f"{tuple(x.shape)}: choose a layer before time or space is pooled away"
            )
        return x
    if layout == "channels_last":
        if x.ndim != 5:
            raise StbiasError(f"a channels_last layer output must be 5-D, got {tuple(x.shape)}")
        return x.permute(0, 4, 1, 2, 3)
    if x.ndim != 3:
        raise StbiasError(f"layout {layout!r} needs (B, N, C) tokens, got {tuple(x.shape)}")
    if layout == "tokens_cls":
        x = x[:, 1:]
    n = x.shape[1]
    if grid is None:
        if clip_shape is None:
            raise StbiasError("a token layer needs grid=[T', H', W'] or the clip's shape")
        grid = infer_grid(n, *[int(s) for s in clip_shape])
    t, h, w = (int(g) for g in grid)
    if t * h * w != n:
        raise StbiasError(f"grid {[t, h, w]} holds {t * h * w} tokens, the layer has {n}")
    if token_order == "thw":
        return x.reshape(x.shape[0], t, h, w, -1).permute(0, 4, 1, 2, 3)
    return x.reshape(x.shape[0], h, w, t, -1).permute(0, 4, 3, 1, 2)


def gradcam_maps(activations: Tensor, gradients: Tensor, weights: str = "time") -> Tensor:
    """``ReLU(Σ_k w_k(t) A^k)`` at the layer's resolution.

    Args:
        activations: ``(B, C, T', H', W')``.
        gradients: the target score's gradient, same shape.
        weights: ``time`` (``w_kt``: spatial mean per time step) or ``time_mean`` (``w_k``: mean
            over time and space).

    Returns:
        ``(B, T', H', W')``.
    """
    _choice("weights", weights, WEIGHTS)
    if activations.shape != gradients.shape or activations.ndim != 5:
        raise StbiasError(
            f"activations {tuple(activations.shape)} and gradients {tuple(gradients.shape)} must "
            "both be (B, C, T, H, W)"
        )
    dims = (3, 4) if weights == "time" else (2, 3, 4)
    w = gradients.mean(dim=dims, keepdim=True)
    return torch.relu((w * activations).sum(1))


def upsample(maps: Tensor, size: Sequence[int], time: str = "interpolate") -> Tensor:
    """Layer-resolution maps ``(B, T', H', W')`` to the clip's ``(T, H, W)``.

    ``interpolate``: trilinear (``align_corners=False``). ``repeat``: bilinear in space, and frame
    ``t`` takes layer step ``floor(t T' / T)`` (each step repeated over the frames it covers).
    """
    _choice("time", time, TIME_MODES)
    t, h, w = (int(s) for s in size)
    if time == "interpolate":
        return F.interpolate(maps[:, None], size=(t, h, w), mode="trilinear", align_corners=False)[
            :, 0
        ]
    spatial = F.interpolate(maps, size=(h, w), mode="bilinear", align_corners=False)
    steps = torch.div(torch.arange(t) * maps.shape[1], t, rounding_mode="floor")
    return spatial[:, steps.to(maps.device)]


def check_eps(eps: float) -> float:
    """The flat-frame tolerance of :func:`normalize_maps`, checked: a number in [0, 1)."""
    try:
        value = float(eps)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value < 1.0:  # also refuses NaN
        raise StbiasError(
            f"Grad-CAM eps={eps!r} is not valid; give a relative tolerance in [0, 1) (a frame "
            "whose max − min is at most eps · max|L| is flat), e.g. 1e-6"
        )
    return value


def normalize_maps(maps: Tensor, mode: str = "frame", eps: float = DEFAULT_EPS) -> Tensor:
    """Min–max normalisation of ``(B, T, H, W)`` maps per frame or per clip (or none).

    ``(L − min) / (max − min)`` over each frame (``frame``) or clip (``clip``). A frame (clip)
    whose range is at most ``eps`` times its largest absolute value is flat (all zero, constant, or
    apart only by rounding) and becomes 0, never NaN. The tolerance is relative, so the result does
    not depend on the maps' scale: ``normalize_maps(c · L) == normalize_maps(L)`` for any ``c > 0``
    (an absolute epsilon in the denominator would squash maps whose range is near it).
    """
    _choice("normalize", mode, NORMALIZE)
    eps = check_eps(eps)
    if mode == "none":
        return maps
    dims = (2, 3) if mode == "frame" else (1, 2, 3)
    low = maps.amin(dim=dims, keepdim=True)
    high = maps.amax(dim=dims, keepdim=True)
    span = high - low
    flat = span <= eps * torch.maximum(high.abs(), low.abs())
    out = (maps - low) / torch.where(flat, torch.ones_like(span), span)
    return torch.where(flat, torch.zeros_like(out), out)


class _GradTap:
    """Captures one layer's output (copied) and its gradient (tensor hook) for one pass."""

    def __init__(self, model: nn.Module, path: str, model_name: str = "model") -> None:
        module_path, self.indices = parse_path(path)
        self.path = path
        self.model_name = model_name
        self.module = get_module(model, module_path, model_name)
        self.activation: Tensor | None = None
        self.gradient: Tensor | None = None
        self._handles: list[Any] = []

    def _forward_hook(self, module: nn.Module, args: Any, output: Any) -> None:
        value = layer_output(output, self.indices, f"layer {self.path!r} of {self.model_name}")
        if not torch.is_tensor(value):
            raise StbiasError(
                f"layer {self.path!r} of {self.model_name} returns a {type(value).__name__}, not "
                "a tensor; tap one element with '[i]'"
            )
        if not value.requires_grad:
            raise StbiasError(f"layer {self.path!r} of {self.model_name} is not differentiable")
        # a copy: an in-place operation after the layer (ReLU(inplace=True)) must not change it
        self.activation = value.detach().clone()
        self._handles.append(value.register_hook(self._grad_hook))

    def _grad_hook(self, grad: Tensor) -> None:
        self.gradient = grad.detach()

    def __enter__(self) -> _GradTap:
        self.activation = self.gradient = None
        self._handles.append(self.module.register_forward_hook(self._forward_hook))
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook (module and tensor) this tap registered."""
        while self._handles:
            self._handles.pop().remove()


class GradCAM:
    """Grad-CAM per time step on one layer of a classifier (construction apart from the call).

    Example:
        >>> cam = GradCAM(model, layer="layers.2.clstm", pack=lambda x: pack_inputs(x, spec))
        >>> out = cam.run(clips01)   # out["maps"]: (B, T, H, W) in [0, 1]

    Args:
        model: maps ``pack(clips)`` to logits ``(B, classes)``; run in eval mode without weight
            gradients (both restored afterwards).
        layer: module path of the layer (``blocks.4``; ``blocks.3[0]`` for element 0 of a tuple
            output).
        pack: turns clips into the model's input; identity when None.
        layout: the layer output's layout (``cnn``, ``channels_last``, ``tokens``,
            ``tokens_cls``).
        weights: ``time`` (per time step, the default) or ``time_mean``.
        target: differentiate the class ``logit`` (default) or its ``softmax`` score.
        time: ``interpolate`` (trilinear, default) or ``repeat``.
        normalize: ``frame`` (default), ``clip`` or ``none``.
        grid: ``(T', H', W')`` for token layouts (None: inferred).
        token_order: ``thw`` or ``hwt`` for token layouts.
        eps: the normalisation's flat-frame tolerance, relative to the frame's (clip's) largest
            absolute value (see :func:`normalize_maps`).
        model_name: the model's name, for messages.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str,
        *,
        pack: Callable[[Tensor], Any] | None = None,
        layout: str = "cnn",
        weights: str = "time",
        target: str = "logit",
        time: str = "interpolate",
        normalize: str = "frame",
        grid: Sequence[int] | None = None,
        token_order: str = "thw",
        eps: float = DEFAULT_EPS,
        model_name: str = "model",
    ) -> None:
        self.model = model
        self.layer = str(layer)
        self.pack = pack
        if layout not in LAYOUTS:
            raise StbiasError(f"unknown layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}")
        self.layout = layout
        self.weights = _choice("weights", weights, WEIGHTS)
        self.target = _choice("target", target, TARGETS)
        self.time = _choice("time", time, TIME_MODES)
        self.normalize = _choice("normalize", normalize, NORMALIZE)
        self.grid = None if grid is None else tuple(int(g) for g in grid)
        self.token_order = _choice("token_order", token_order, TOKEN_ORDERS)
        self.eps = check_eps(eps)
        self.model_name = model_name
        _GradTap(model, self.layer, model_name)  # a bad path stops here, before any data

    def settings(self) -> dict[str, Any]:
        """Every setting, as plain values (for results files)."""
        keys = ("layer", "layout", "weights", "target", "time", "normalize", "token_order", "eps")
        out = {k: getattr(self, k) for k in keys}
        out["grid"] = list(self.grid) if self.grid else None
        return out

    def run(
        self, clips: Tensor, target: Tensor | None = None, labels: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Maps of a batch of clips ``(B, C, T, H, W)`` for ``target`` (None: predicted class).

        Returns:
            ``maps`` ``(B, T, H, W)`` (upsampled, normalised), ``raw`` ``(B, T', H', W')`` (the
            ReLU'd maps at the layer's resolution), ``target``, ``predicted``, ``score`` (the
            differentiated score of the target), ``probability`` (its softmax score) and, with
            ``labels``, ``labels`` (−1 where the classifier has no such class).
        """
        was_training = self.model.training
        flags = [(p, p.requires_grad) for p in self.model.parameters()]
        self.model.eval()
        tap = _GradTap(self.model, self.layer, self.model_name)
        try:
            for p, _ in flags:
                p.requires_grad_(False)
            # the clips carry the graph, so frozen weights still give the layer a gradient
            x = clips.detach().requires_grad_(True)
            with torch.enable_grad():
                with tap:
                    logits = self.model(self.pack(x) if self.pack is not None else x)
                    if tap.activation is None:
                        raise StbiasError(
                            f"layer {self.layer!r} of {self.model_name} never ran in the forward"
                        )
                    predicted = logits.argmax(-1)
                    if target is None:
                        cls = predicted
                    else:
                        cls = check_classes(target, logits.shape[-1]).to(x.device)
                    probs = logits.softmax(-1)
                    scores = logits if self.target == "logit" else probs
                    chosen = scores.gather(1, cls[:, None])[:, 0]
                    torch.autograd.grad(chosen.sum(), x)
        finally:
            tap.remove()
            for p, flag in flags:
                p.requires_grad_(flag)
            self.model.train(was_training)
        if tap.gradient is None:
            raise StbiasError(f"no gradient reached layer {self.layer!r} of {self.model_name}")
        shape = clips.shape[2:]
        acts = to_grid(tap.activation, self.layout, self.grid, self.token_order, shape)
        grads = to_grid(tap.gradient, self.layout, self.grid, self.token_order, shape)
        raw = gradcam_maps(acts.float(), grads.float(), self.weights)
        maps = normalize_maps(upsample(raw, shape, self.time), self.normalize, self.eps)
        out = {
            "maps": maps.detach(),
            "raw": raw.detach(),
            "target": cls.detach(),
            "predicted": predicted.detach(),
            "score": chosen.detach(),
            "probability": probs.gather(1, cls[:, None])[:, 0].detach(),
        }
        if labels is not None:
            labels = torch.as_tensor(labels, device=cls.device).long().view(-1)
            known = (labels >= 0) & (labels < probs.shape[-1])
            out["labels"] = torch.where(known, labels, torch.full_like(labels, -1))
        return out
