"""Weight temporality of 3D convolutions: ASDT and self-convolution (Byvshev et al.).

Both measures read only the weights, so they run on random, pretrained or trained models with no
data. A convolution weight is viewed as ``(N, M, T, H, W)``: ``N`` output channels, ``M`` input
channels per group (``M = 1`` for depthwise/channel-wise convolutions), ``T`` temporal extent.

* ASDT of a layer: mean over ``(n, m, i, j)`` of the population standard deviation over ``t``.
  ``asdt_scaled`` divides it by the population standard deviation of all the layer's weights, so
  it does not change when the weights are scaled (a layer whose weights are all equal gets 0).
* Self-convolution of one kernel ``w = w[n, m]``: ``sc(w) = sum_t sum_ij w_t(i, j) w_{t+1}(i, j)``.
  Identical stacked slices give a large positive value, temporally varying kernels a low or
  negative one. stbias follows that rationale: a kernel is temporal iff ``sc(w) < delta``
  (``rule="spec"``, the default, ``delta = 0``). The paper's Algorithm 2 literally labels
  ``sc > delta`` as temporal; ``rule="literal"`` gives that. An output channel is temporal iff more
  than half of its ``M`` kernels are temporal (exactly half is not a majority).

Which layers count: every ``nn.Conv3d`` (and any other module with a 5-D ``weight``) whose
temporal extent ``T > 1``, decided per convolution by its kernel shape. Full 3D kernels
``(T, k, k)`` count; in factorised models (R(2+1)D, S3D, CSN) the spatial factors ``(1, k, k)``
have ``T = 1`` and are skipped, so only the temporal factors ``(T, 1, 1)`` count. Layers are named
by their module path and numbered (``depth``, from 1) in the order the model registers them.

Functional API: :func:`asdt`, :func:`asdt_scaled`, :func:`self_convolution`,
:func:`temporal_kernels`, :func:`temporal_channels`, :func:`temporal_convs`,
:func:`layer_temporality`, :func:`weight_temporality`. Object API:
``WeightTemporality(model, delta=0.0, rule="spec", aliases=None).run()``. Accumulating
``torchmetrics`` twins: :class:`ASDT` and :class:`SelfConvolution`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from stbias.errors import StbiasError

RULES = ("spec", "literal")


@dataclass(frozen=True)
class TemporalConv:
    """One convolution with a temporal extent > 1.

    Attributes:
        name: module path, e.g. ``blocks.1.res_blocks.0.branch2.conv_a``.
        module: the module itself.
        weight: detached weight viewed as ``(N, M, T, H, W)`` (transposed convolutions re-ordered
            so that ``N`` is the output channel).
        depth: 1-based position among the model's temporal convolutions, in registration order.
    """

    name: str
    module: nn.Module
    weight: Tensor
    depth: int

    @property
    def kernel(self) -> tuple[int, int, int]:
        """The kernel size ``(T, H, W)``."""
        return tuple(int(s) for s in self.weight.shape[2:])


def _as_kernels(weight: Tensor) -> Tensor:
    """Check a weight is ``(N, M, T, H, W)`` and return it detached in float64."""
    if not isinstance(weight, Tensor) or weight.dim() != 5:
        shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise StbiasError(
            f"weight of shape {shape} is not a 3D convolution weight; expected (N, M, T, H, W)"
        )
    return weight.detach().to(torch.float64)


def check_rule(rule: str) -> None:
    if rule not in RULES:
        raise StbiasError(
            f"unknown self-convolution rule {rule!r}; valid rules: {', '.join(RULES)}"
        )


def _check_temporal(w: Tensor) -> None:
    if w.shape[2] < 2:
        raise StbiasError(
            f"weight of shape {tuple(w.shape)} has temporal extent T = {w.shape[2]}; "
            "ASDT and self-convolution need T > 1"
        )


def _asdt_update(weight: Tensor) -> tuple[Tensor, int, Tensor, Tensor, int]:
    """Sums for ASDT: (sum of temporal stds, their count, sum w, sum w^2, number of weights)."""
    w = _as_kernels(weight)
    _check_temporal(w)
    std_t = w.std(dim=2, unbiased=False)  # (N, M, H, W)
    return std_t.sum(), std_t.numel(), w.sum(), (w * w).sum(), w.numel()


def _asdt_compute(
    std_sum: Tensor, std_count: Tensor | int, w_sum: Tensor, w_sq: Tensor, w_count: Tensor | int
) -> tuple[Tensor, Tensor]:
    """ASDT and its scale-free variant from the sums of :func:`_asdt_update`."""
    value = std_sum / std_count
    mean = w_sum / w_count
    var = (w_sq / w_count - mean * mean).clamp_min(0.0)
    std_all = var.sqrt()
    # every weight equal: no temporal variation at all, and nothing to scale by
    scaled = value / std_all if std_all > 0 else torch.zeros_like(value)
    return value, scaled


def asdt(weight: Tensor) -> Tensor:
    """ASDT of one layer: mean over ``(n, m, i, j)`` of the population std over ``t``.

    Args:
        weight: ``(N, M, T, H, W)`` with ``T > 1``.

    Returns:
        A float64 scalar tensor.
    """
    w = _as_kernels(weight)
    _check_temporal(w)
    return w.std(dim=2, unbiased=False).mean()


def asdt_scaled(weight: Tensor) -> Tensor:
    """ASDT divided by the population std of all the layer's weights (0 if all are equal)."""
    w = _as_kernels(weight)
    value = asdt(w)
    std_all = w.std(unbiased=False)
    return value / std_all if std_all > 0 else torch.zeros_like(value)


def self_convolution(weight: Tensor) -> Tensor:
    """Self-convolution ``sum_t sum_ij w_t(i, j) w_{t+1}(i, j)`` of every kernel.

    Args:
        weight: ``(N, M, T, H, W)`` with ``T > 1``.

    Returns:
        ``(N, M)`` float64.
    """
    w = _as_kernels(weight)
    _check_temporal(w)
    return (w[:, :, :-1] * w[:, :, 1:]).sum(dim=(2, 3, 4))


def temporal_kernels(weight: Tensor, delta: float = 0.0, rule: str = "spec") -> Tensor:
    """Which kernels are temporal: ``sc < delta`` (``rule="spec"``) or ``sc > delta`` (literal).

    Returns:
        ``(N, M)`` bool.
    """
    check_rule(rule)
    sc = self_convolution(weight)
    return sc < delta if rule == "spec" else sc > delta


def temporal_channels(weight: Tensor, delta: float = 0.0, rule: str = "spec") -> Tensor:
    """Which output channels are temporal: more than half of their ``M`` kernels are.

    Returns:
        ``(N,)`` bool.
    """
    kernels = temporal_kernels(weight, delta, rule)
    return 2 * kernels.sum(dim=1) > kernels.shape[1]


def _oriented_weight(module: nn.Module) -> Tensor:
    """The module's 5-D weight as ``(N_out, M_in_per_group, T, H, W)``."""
    w = module.weight.detach()
    if isinstance(module, nn.ConvTranspose3d):
        # transposed weights are (C_in, C_out / groups, ...): regroup so outputs come first
        g = module.groups
        c_in, c_out_g = w.shape[:2]
        w = w.reshape(g, c_in // g, c_out_g, *w.shape[2:]).transpose(1, 2)
        w = w.reshape(g * c_out_g, c_in // g, *w.shape[3:])
    return w


def temporal_convs(model: nn.Module) -> list[TemporalConv]:
    """Every convolution of ``model`` whose temporal extent is > 1, in registration order."""
    found: list[TemporalConv] = []
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, Tensor) or weight.dim() != 5:
            continue
        w = _oriented_weight(module)
        if w.shape[2] > 1:
            found.append(TemporalConv(name=name, module=module, weight=w, depth=len(found) + 1))
    return found


def layer_temporality(weight: Tensor, delta: float = 0.0, rule: str = "spec") -> dict[str, Any]:
    """All per-layer numbers for one ``(N, M, T, H, W)`` weight, as plain Python values.

    Returns:
        ``asdt``, ``asdt_scaled``, ``temporal_channels``, ``channels``, ``temporal_fraction``,
        ``temporal_kernels``, ``kernels`` and ``kernel`` (``[T, H, W]``).
    """
    w = _as_kernels(weight)
    kernels = temporal_kernels(w, delta, rule)
    channels = 2 * kernels.sum(dim=1) > kernels.shape[1]
    n_temporal = int(channels.sum())
    return {
        "asdt": float(asdt(w)),
        "asdt_scaled": float(asdt_scaled(w)),
        "temporal_channels": n_temporal,
        "channels": int(channels.numel()),
        "temporal_fraction": n_temporal / channels.numel(),
        "temporal_kernels": int(kernels.sum()),
        "kernels": int(kernels.numel()),
        "kernel": [int(s) for s in w.shape[2:]],
    }


def _labels(names: list[str], aliases: Mapping[str, str] | None) -> dict[str, str]:
    """Module path -> display label: the alias whose path is exactly that module, else the path."""
    by_path = {str(path): str(alias) for alias, path in (aliases or {}).items()}
    return {name: by_path.get(name, name) for name in names}


def weight_temporality(
    model: nn.Module,
    delta: float = 0.0,
    rule: str = "spec",
    aliases: Mapping[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per temporal convolution of ``model``: :func:`layer_temporality` plus ``depth``, ``label``.

    Args:
        model: any module; its convolutions with ``T > 1`` are measured.
        delta: self-convolution threshold.
        rule: ``"spec"`` (temporal iff ``sc < delta``) or ``"literal"`` (``sc > delta``).
        aliases: optional ``alias -> module path`` (a model YAML's ``layers``); a layer whose
            path is exactly an alias's path is labelled with the alias.

    Returns:
        Module path -> numbers, in depth order.
    """
    check_rule(rule)
    convs = temporal_convs(model)
    if not convs:
        raise StbiasError(
            f"{type(model).__name__} has no convolution with temporal extent > 1; "
            "ASDT and self-convolution need 3D convolution weights (N, M, T, H, W) with T > 1"
        )
    labels = _labels([c.name for c in convs], aliases)
    out: dict[str, dict[str, Any]] = {}
    for conv in convs:
        out[conv.name] = {
            **layer_temporality(conv.weight, delta, rule),
            "depth": conv.depth,
            "label": labels[conv.name],
        }
    return out


class ASDT(Metric):
    """ASDT accumulated over the weights passed to ``update`` (each ``(N, M, T, H, W)``).

    One ``update`` per layer gives that layer's ASDT; several updates pool their kernels as if
    they were one layer. ``compute`` returns ``(asdt, asdt_scaled)``.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for state in ("std_sum", "std_count", "w_sum", "w_sq", "w_count"):
            self.add_state(
                state, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
            )

    def update(self, weight: Tensor) -> None:
        """Add one weight's kernels."""
        std_sum, std_count, w_sum, w_sq, w_count = _asdt_update(weight)
        self.std_sum += std_sum.to(self.std_sum.device)
        self.std_count += std_count
        self.w_sum += w_sum.to(self.w_sum.device)
        self.w_sq += w_sq.to(self.w_sq.device)
        self.w_count += w_count

    def compute(self) -> tuple[Tensor, Tensor]:
        """``(asdt, asdt_scaled)`` as float64 scalars."""
        return _asdt_compute(self.std_sum, self.std_count, self.w_sum, self.w_sq, self.w_count)


class SelfConvolution(Metric):
    """Temporal channel and kernel counts accumulated over the weights passed to ``update``.

    ``compute`` returns the fraction of temporal output channels.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(self, delta: float = 0.0, rule: str = "spec", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_rule(rule)
        self.delta = float(delta)
        self.rule = rule
        for state in ("temporal_channels", "channels", "temporal_kernels", "kernels"):
            self.add_state(state, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, weight: Tensor) -> None:
        """Classify one weight's kernels and channels and add the counts."""
        kernels = temporal_kernels(weight, self.delta, self.rule)
        channels = 2 * kernels.sum(dim=1) > kernels.shape[1]
        self.temporal_channels += int(channels.sum())
        self.channels += channels.numel()
        self.temporal_kernels += int(kernels.sum())
        self.kernels += kernels.numel()

    def compute(self) -> Tensor:
        """Fraction of temporal output channels (float64 scalar)."""
        return self.temporal_channels.double() / self.channels.clamp_min(1)
