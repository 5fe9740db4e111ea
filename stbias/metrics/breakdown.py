"""Errors split by factor for labels made of a motion and an appearance class (Byvshev, Table 1a).

A synthetic dataset's class is a pair of factors written as one mixed-radix number, the first
factor most significant: BrushMNIST's label ``10 * s + b`` is the shape ``s`` (the trajectory, a
motion class) and the brush ``b`` (an appearance class), so ``s = label // 10`` and
``b = label % 10``; P+F+M's label ``place * y + motion`` is the place (appearance) and the motion.
Datasets declare this as ``label_factors``: ``((name, role, size), ...)`` with role ``motion`` or
``appearance``, e.g. ``(("shape", "motion", 10), ("brush", "appearance", 10))``.

A prediction is decoded the same way. Over all clips:

* ``acc`` — the whole class right (both factors right);
* ``acc_<name>`` — that factor right (``acc_shape``, ``acc_brush``);
* ``err_appearance_only`` — appearance factor wrong, motion factor right;
* ``err_motion_only`` — motion factor wrong, appearance factor right;
* ``err_both`` — both wrong.

All are fractions of all clips, so ``acc + err_appearance_only + err_motion_only + err_both = 1``.
:class:`ErrorBreakdown` accumulates integer counts (summed across processes);
:func:`error_breakdown` is its functional twin, and both share ``_update`` / ``_compute``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torchmetrics import Metric

from stbias.errors import StbiasError

ROLES = ("motion", "appearance")
ERRORS = ("err_appearance_only", "err_motion_only", "err_both")


class LabelFactor(NamedTuple):
    """One factor of a class label: its name, its role (motion or appearance) and class count."""

    name: str
    role: str
    size: int


def label_factors(factors: Sequence[Sequence]) -> tuple[LabelFactor, ...]:
    """Check ``((name, role, size), ...)``: one motion and one appearance factor, sizes >= 1."""
    out = tuple(LabelFactor(str(f[0]), str(f[1]), int(f[2])) for f in factors)
    roles = sorted(f.role for f in out)
    if roles != sorted(ROLES):
        raise StbiasError(
            f"label factors {[tuple(f) for f in out]} need exactly one motion and one appearance "
            "factor, e.g. (('shape', 'motion', 10), ('brush', 'appearance', 10))"
        )
    if len({f.name for f in out}) != len(out) or any(f.size < 1 for f in out):
        raise StbiasError(f"label factors need distinct names and sizes >= 1; got {out}")
    return out


def split_label(label: Tensor, factors: Sequence[LabelFactor]) -> dict[str, Tensor]:
    """Each factor's class of ``label`` (mixed radix, the first factor most significant)."""
    out: dict[str, Tensor] = {}
    rest = label
    for factor in reversed(factors):
        out[factor.name] = rest % factor.size
        rest = torch.div(rest, factor.size, rounding_mode="floor")
    return {f.name: out[f.name] for f in factors}


def _classes(preds: Tensor) -> Tensor:
    """Class indices from indices ``(N,)`` or scores ``(N, K)`` (argmax)."""
    if preds.dim() == 2:
        return preds.argmax(dim=1)
    if preds.dim() != 1:
        raise StbiasError(
            f"predictions must be class indices (N,) or scores (N, K); got {tuple(preds.shape)}"
        )
    return preds.long()


def _update(preds: Tensor, target: Tensor, factors: Sequence[LabelFactor]) -> dict[str, Tensor]:
    """Counts for one batch: ``n``, ``correct``, ``<name>_correct`` per factor and the errors."""
    preds, target = _classes(preds), target.long()
    if preds.shape != target.shape:
        raise StbiasError(
            f"{tuple(preds.shape)} predictions for {tuple(target.shape)} labels; they must match"
        )
    total = 1
    for f in factors:
        total *= f.size
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= total):
        raise StbiasError(
            f"labels must lie in [0, {total}) for factors "
            f"{', '.join(f'{f.name} ({f.size})' for f in factors)}; "
            f"got {int(target.min())} .. {int(target.max())}"
        )
    true, pred = split_label(target, factors), split_label(preds, factors)
    right = {f.name: pred[f.name] == true[f.name] for f in factors}
    role = {f.role: right[f.name] for f in factors}
    counts = {
        "n": torch.tensor(target.numel(), dtype=torch.long),
        "correct": (preds == target).sum(),
        "err_appearance_only": (~role["appearance"] & role["motion"]).sum(),
        "err_motion_only": (~role["motion"] & role["appearance"]).sum(),
        "err_both": (~role["motion"] & ~role["appearance"]).sum(),
    }
    counts.update({f"{name}_correct": ok.sum() for name, ok in right.items()})
    return {k: v.to(torch.long).cpu() for k, v in counts.items()}


def _compute(counts: dict[str, Tensor], factors: Sequence[LabelFactor]) -> dict[str, float]:
    """Fractions of all clips (see the module docstring); an empty count is an error, not NaN."""
    n = int(counts["n"])
    if n == 0:
        raise StbiasError("no clips were evaluated: the error breakdown needs at least one")
    out = {"acc": int(counts["correct"]) / n}
    out.update({f"acc_{f.name}": int(counts[f"{f.name}_correct"]) / n for f in factors})
    out.update({key: int(counts[key]) / n for key in ERRORS})
    return out


def error_breakdown(preds: Tensor, target: Tensor, factors: Sequence[Sequence]) -> dict[str, float]:
    """Accuracy, per-factor accuracy and the three error fractions of ``preds`` on ``target``.

    Args:
        preds: predicted classes ``(N,)`` or class scores ``(N, K)``.
        target: true classes ``(N,)``.
        factors: the label's factors, ``((name, role, size), ...)``, most significant first.
    """
    factors = label_factors(factors)
    return _compute(_update(preds, target, factors), factors)


class ErrorBreakdown(Metric):
    """:func:`error_breakdown` accumulated over batches (and processes: sum states)."""

    full_state_update = False

    def __init__(self, factors: Sequence[Sequence], **kwargs) -> None:
        super().__init__(**kwargs)
        self.factors = label_factors(factors)
        keys = ["n", "correct", *ERRORS, *(f"{f.name}_correct" for f in self.factors)]
        for key in keys:
            self.add_state(key, torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch of predictions (indices or scores) and true labels."""
        for key, value in _update(preds, target, self.factors).items():
            setattr(self, key, getattr(self, key) + value.to(self.device))

    def compute(self) -> dict[str, float]:
        """The fractions over everything added so far."""
        keys = ["n", "correct", *ERRORS, *(f"{f.name}_correct" for f in self.factors)]
        return _compute({k: getattr(self, k) for k in keys}, self.factors)
