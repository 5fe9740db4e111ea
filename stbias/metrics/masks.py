"""Temporal masks (Mänttäri et al., ACCV'20, Sec. 3.1): which frames a decision needs.

A mask ``m ∈ [0, 1]^T`` perturbs a clip ``(B, C, T, H, W)`` in time:

* **freeze** — ``y_0 = x_0``, ``y_t = (1 − m_t) x_t + m_t y_{t−1}``: a masked frame repeats the
  (perturbed) frame before it, so motion stops;
* **reverse** — the contiguous runs where ``m > 0.1`` are reversed inside themselves and blended
  by the mask, ``y_t = (1 − m_t) x_t + m_t x_rev(t)``.

The search minimises ``λ1 ‖m‖₁ + λ2 TV_β(m) + F_c(perturbed clip)`` over a real-valued parameter
passed through a sigmoid (Adam, learning rate 0.2, 300 iterations), ``F_c`` the softmax score of
the target class, ``TV_β(m) = Σ_t |m_{t+1} − m_t|^β``. It starts from the smallest centred mask
whose score drop is at least 90 % of the fully frozen clip's drop (logits ±5). A batch of clips is
optimised at once, one mask per clip: the loss is the sum of the clips' losses and Adam works
element-wise, so every clip follows exactly its own single-clip trajectory.

Per clip the search reports the mask, its length (frames with ``m > 0.5``), OS / FS / RS (softmax
score of the target class on the original, freeze- and reverse-perturbed clip, both with the final
mask), the drop ratio ``(OS − FS) / (OS − RS)`` (left out, and counted, when ``OS − RS ≤ 0.001``
or ``OS − FS ≤ 0.001``) and the drop difference ``RS − FS``.

Parity options reproduce what the authors' released code does where it departs from the paper:
``init="reference"`` (keep the first centred mask that fails the 90 % test),
``tv_weights="reference"`` (interior differences counted twice) and
``reverse_blend="reference"`` (both frames of a swapped pair weighted by the first one's mask).

Functional API: :func:`freeze`, :func:`reverse`, :func:`perturb`, :func:`reverse_index`,
:func:`tv_beta`, :func:`centred_masks`, :func:`drop_measures`, :func:`summarize`,
:func:`temporal_mask_statistics`. Object API: ``TemporalMask(model, ...).run(clips)``; the
accumulating ``torchmetrics`` twin is :class:`TemporalMaskStatistics`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from stbias.errors import StbiasError

PERTURBATIONS = ("freeze", "reverse")
INITS = ("spec", "reference")
TV_WEIGHTS = ("spec", "reference")
REVERSE_BLENDS = ("spec", "reference")
TARGET_CLASSES = ("predicted", "label")


# the keyword arguments of TemporalMask that are settings of the search (metric.<key>)
SEARCH_SETTINGS = (
    "perturbation",
    "iterations",
    "lr",
    "l1",
    "tv",
    "beta",
    "init",
    "init_fraction",
    "init_logit",
    "tv_weights",
    "reverse_blend",
    "reverse_threshold",
    "length_threshold",
    "min_drop",
)


def _choice(name: str, value: str, valid: Sequence[str]) -> str:
    if value not in valid:
        raise StbiasError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
    return value


def _check_clips(x: Tensor, mask: Tensor) -> Tensor:
    """Check ``x`` is ``(B, C, T, H, W)`` and return ``mask`` as ``(B, T)`` on its device."""
    if not torch.is_tensor(x) or x.ndim != 5:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise StbiasError(f"temporal masks need clips (B, C, T, H, W), got {shape}")
    mask = torch.as_tensor(mask, device=x.device)
    if mask.ndim == 1:
        mask = mask.unsqueeze(0).expand(x.shape[0], -1)
    if mask.shape != (x.shape[0], x.shape[2]):
        raise StbiasError(
            f"a mask of shape {tuple(mask.shape)} does not fit clips of shape {tuple(x.shape)}; "
            "give one value per frame, (T,) or (B, T)"
        )
    return mask.to(x.dtype)


def freeze(x: Tensor, mask: Tensor) -> Tensor:
    """Freeze perturbation: ``y_0 = x_0``, ``y_t = (1 − m_t) x_t + m_t y_{t−1}``.

    Args:
        x: clips ``(B, C, T, H, W)``.
        mask: ``(B, T)`` or ``(T,)`` in [0, 1]; ``m_0`` has no effect.

    Returns:
        The perturbed clips, differentiable in ``x`` and ``mask``.
    """
    mask = _check_clips(x, mask)
    return torch.einsum("bts,bcshw->bcthw", freeze_weights(mask), x)


def freeze_weights(mask: Tensor) -> Tensor:
    """``W`` ``(B, T, T)`` with ``freeze(x, m)_t = Σ_s W[t, s] x_s``.

    The recursion of :func:`freeze` run on the frames' weights instead of the frames:
    ``W_0 = e_0``, ``W_t = (1 − m_t) e_t + m_t W_{t−1}``; one matrix product then mixes the frames
    (far cheaper than ``2T`` full-frame blends, and the same numbers).
    """
    b, t = mask.shape
    eye = torch.eye(t, dtype=mask.dtype, device=mask.device)
    rows = [eye[0].expand(b, t)]
    for step in range(1, t):
        m = mask[:, step : step + 1]
        rows.append((1 - m) * eye[step] + m * rows[-1])
    return torch.stack(rows, dim=1)


def runs(row: Sequence[float], threshold: float = 0.1) -> list[tuple[int, int]]:
    """The contiguous runs ``[start, stop)`` of one mask where ``m > threshold``."""
    out, start = [], None
    for t, value in enumerate(row):
        if value > threshold and start is None:
            start = t
        elif value <= threshold and start is not None:
            out.append((start, t))
            start = None
    if start is not None:
        out.append((start, len(row)))
    return out


def reverse_index(mask: Tensor, threshold: float = 0.1) -> Tensor:
    """``rev(t)`` of every frame: reversed inside each run where ``m > threshold``, else ``t``.

    Args:
        mask: ``(B, T)``.

    Returns:
        Long tensor ``(B, T)`` on the mask's device.
    """
    rows = mask.detach().to("cpu", torch.float64).numpy()
    index = np.tile(np.arange(rows.shape[1]), (rows.shape[0], 1))
    for b, row in enumerate(rows):
        for start, stop in runs(row.tolist(), threshold):
            index[b, start:stop] = np.arange(stop - 1, start - 1, -1)
    return torch.as_tensor(index, device=mask.device)


def reverse(x: Tensor, mask: Tensor, threshold: float = 0.1, blend: str = "spec") -> Tensor:
    """Reverse perturbation: runs of ``m > threshold`` reversed in place, blended by the mask.

    ``blend="spec"``: ``y_t = (1 − m_t) x_t + m_t x_rev(t)``. ``blend="reference"`` weights both
    frames of a swapped pair ``(t, rev(t))`` by the mask value of the earlier one, as the
    authors' code does. The middle frame of an odd run and every frame outside the runs stay
    as they are.

    Args:
        x: clips ``(B, C, T, H, W)``.
        mask: ``(B, T)`` or ``(T,)`` in [0, 1].
        threshold: a frame belongs to a run when its mask value is above this.
        blend: ``spec`` or ``reference``.
    """
    _choice("reverse blend", blend, REVERSE_BLENDS)
    mask = _check_clips(x, mask)
    index = reverse_index(mask, threshold)
    weight = mask
    if blend == "reference":
        first = torch.minimum(index, torch.arange(x.shape[2], device=x.device).expand_as(index))
        weight = mask.gather(1, first)
    rows = torch.arange(x.shape[0], device=x.device).unsqueeze(1)
    reversed_frames = x[rows, :, index].permute(0, 2, 1, 3, 4)  # (B, T, C, H, W) -> (B, C, T, H, W)
    w = weight.view(x.shape[0], 1, x.shape[2], 1, 1)
    return (1 - w) * x + w * reversed_frames


def perturb(
    x: Tensor, mask: Tensor, kind: str = "freeze", threshold: float = 0.1, blend: str = "spec"
) -> Tensor:
    """Apply the ``freeze`` or ``reverse`` perturbation (see :func:`freeze`, :func:`reverse`)."""
    if _choice("perturbation", kind, PERTURBATIONS) == "freeze":
        return freeze(x, mask)
    return reverse(x, mask, threshold=threshold, blend=blend)


def tv_beta(mask: Tensor, beta: float = 3.0, weights: str = "spec") -> Tensor:
    """``TV_β(m) = Σ_t |m_{t+1} − m_t|^β`` per clip, each difference once.

    ``weights="reference"`` counts the differences as the authors' code does: the interior ones
    twice, the first and last once (and none at all for ``T = 2``).

    Args:
        mask: ``(B, T)`` or ``(T,)``.
        beta: the exponent, ``>= 1`` (below 1 the gradient at a flat mask is infinite).

    Returns:
        ``(B,)`` (or a scalar for a ``(T,)`` mask).
    """
    _choice("tv_weights", weights, TV_WEIGHTS)
    if beta < 1:
        raise StbiasError(f"TV exponent beta must be >= 1, got {beta}")
    diffs = (mask[..., 1:] - mask[..., :-1]).abs().pow(beta)
    if weights == "reference":
        k = torch.arange(diffs.shape[-1], device=mask.device)
        count = (k <= mask.shape[-1] - 3).to(mask.dtype) + (k >= 1).to(mask.dtype)
        diffs = diffs * count
    return diffs.sum(-1)


def centred_masks(frames: int) -> Tensor:
    """Binary centred masks from the shortest to the whole clip: lengths ``T, T − 2, ...``.

    Only exactly centred masks (lengths of the parity of ``T``, at least 1), as in the authors'
    search: ``(K, T)`` float, row ``k`` the ``k``-th shortest.
    """
    lengths = list(range(frames % 2 or 2, frames + 1, 2))
    out = torch.zeros(len(lengths), frames)
    for k, length in enumerate(lengths):
        start = (frames - length) // 2
        out[k, start : start + length] = 1
    return out


def _pick_initial(
    drops: Tensor, full_drop: Tensor, masks: Tensor, fraction: float, init: str
) -> Tensor:
    """The initial binary mask per clip from the drops of every centred mask.

    Args:
        drops: ``(B, K)`` drop ``OS − score`` of the centred masks (shortest first).
        full_drop: ``(B,)`` drop of the fully frozen clip.
        masks: ``(K, T)`` centred masks, shortest first (the last is the full mask).
    """
    b, k = drops.shape
    chosen = torch.full((b,), k - 1, dtype=torch.long)
    frames = masks.shape[1]
    first = frames % 2 or 2
    # the authors' loop tries lengths T − 2i for i = 1 .. T // 2 − 1 (as indices into masks)
    tried = [(frames - 2 * i - first) // 2 for i in range(1, frames // 2)]
    for i in range(b):
        if init == "spec":
            if full_drop[i] <= 0:
                continue  # OS <= the fully frozen score: nothing to explain, start full
            hits = torch.nonzero(drops[i] >= fraction * full_drop[i]).flatten()
            if len(hits):
                chosen[i] = hits[0]
            continue
        # the authors' loop: shrink while the ratio (OS − score) / (OS − fully frozen score) is
        # not below the fraction and keep the first failure (the last one tried if none fails;
        # the full mask if there is none to try). The ratio is taken as their tensors take it,
        # also where OS <= the fully frozen score: a negative denominator flips its sign (a mask
        # that lowers the score fails at once: length T − 2), a zero one gives ±inf or NaN
        # (+inf and NaN never fail, −inf fails at once).
        ratio = drops[i] / full_drop[i]
        for j in tried:
            chosen[i] = j
            if bool(ratio[j] < fraction):
                break
    return masks[chosen]


def drop_measures(
    os_: Tensor, fs: Tensor, rs: Tensor, min_drop: float = 0.001
) -> dict[str, Tensor]:
    """Drop ratio ``(OS − FS) / (OS − RS)`` with the paper's filters, and ``RS − FS``.

    Returns:
        ``drop_ratio`` (NaN where filtered), ``drop_ratio_kept`` (bool: ``OS − RS > min_drop``
        and ``OS − FS > min_drop``) and ``drop_difference`` (every clip).
    """
    os_, fs, rs = (torch.as_tensor(v, dtype=torch.float64) for v in (os_, fs, rs))
    kept = ((os_ - rs) > min_drop) & ((os_ - fs) > min_drop)
    ratio = torch.full_like(os_, float("nan"))
    ratio[kept] = (os_ - fs)[kept] / (os_ - rs)[kept]
    return {"drop_ratio": ratio, "drop_ratio_kept": kept, "drop_difference": rs - fs}


def summarize(values: Any, level: float = 0.95) -> dict[str, Any]:
    """Mean, population std, count and a t-interval of the mean (``level``) of finite values."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return {"mean": None, "std": None, "n": 0, "ci": None}
    mean, std = float(v.mean()), float(v.std())
    if n > 1:
        half = float(stats.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
        ci = [mean - half, mean + half]
    else:
        ci = None
    return {"mean": mean, "std": std, "n": n, "ci": ci}


def check_classes(target: Any, classes: int) -> Tensor:
    """``target`` as a long tensor, refused unless every class is in ``[0, classes)``."""
    target = torch.as_tensor(target).long().view(-1)
    bad = target[(target < 0) | (target >= classes)]
    if bad.numel():
        raise StbiasError(
            f"target class {int(bad[0])} is not a class of this classifier ({classes} outputs); "
            "explain the predicted class, or a model trained on these labels"
        )
    return target


class TemporalMask:
    """Batched temporal-mask search on a classifier (construction apart from the call).

    Example:
        >>> explainer = TemporalMask(model, pack=lambda x: pack_inputs(x, spec))
        >>> out = explainer.run(clips01)            # (B, C, T, H, W) in [0, 1]
        >>> out["mask"].shape, out["length"]        # (B, T), frames with m > 0.5

    Args:
        model: maps ``pack(clips)`` to logits ``(B, classes)``; run in eval mode without weight
            gradients (both restored afterwards).
        pack: turns clips into the model's input (e.g. normalisation, pathways); identity when
            None. Perturbations act on the clips before packing.
        perturbation: what the search optimises, ``freeze`` (the paper) or ``reverse``.
        iterations: Adam steps.
        lr: Adam's learning rate.
        l1: λ1, weight of ``‖m‖₁``.
        tv: λ2, weight of ``TV_β(m)``.
        beta: β of ``TV_β``.
        init: ``spec`` (smallest centred mask passing the test) or ``reference``.
        init_fraction: the test: drop ≥ this fraction of the fully frozen clip's drop.
        init_logit: the initial parameter is ``±init_logit``.
        tv_weights: ``spec`` or ``reference`` (see :func:`tv_beta`).
        reverse_blend: ``spec`` or ``reference`` (see :func:`reverse`).
        reverse_threshold: mask value above which a frame belongs to a reversed run.
        length_threshold: mask value above which a frame counts toward the mask length.
        min_drop: the drop-ratio filter.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        pack: Callable[[Tensor], Any] | None = None,
        perturbation: str = "freeze",
        iterations: int = 300,
        lr: float = 0.2,
        l1: float = 0.01,
        tv: float = 0.02,
        beta: float = 3.0,
        init: str = "spec",
        init_fraction: float = 0.9,
        init_logit: float = 5.0,
        tv_weights: str = "spec",
        reverse_blend: str = "spec",
        reverse_threshold: float = 0.1,
        length_threshold: float = 0.5,
        min_drop: float = 0.001,
    ) -> None:
        self.model = model
        self.pack = pack
        self.perturbation = _choice("perturbation", perturbation, PERTURBATIONS)
        self.init = _choice("init", init, INITS)
        self.tv_weights = _choice("tv_weights", tv_weights, TV_WEIGHTS)
        self.reverse_blend = _choice("reverse_blend", reverse_blend, REVERSE_BLENDS)
        if int(iterations) < 0:
            raise StbiasError(f"iterations must be >= 0, got {iterations}")
        if float(lr) <= 0:
            raise StbiasError(f"lr must be positive, got {lr}")
        if not 0 < float(init_fraction) <= 1:
            raise StbiasError(f"init_fraction must be in (0, 1], got {init_fraction}")
        if float(beta) < 1:
            raise StbiasError(f"beta must be >= 1, got {beta}")
        self.iterations = int(iterations)
        self.lr = float(lr)
        self.l1 = float(l1)
        self.tv = float(tv)
        self.beta = float(beta)
        self.init_fraction = float(init_fraction)
        self.init_logit = float(init_logit)
        self.reverse_threshold = float(reverse_threshold)
        self.length_threshold = float(length_threshold)
        self.min_drop = float(min_drop)

    def settings(self) -> dict[str, Any]:
        """Every setting of the search, as plain values (for results files)."""
        return {k: getattr(self, k) for k in SEARCH_SETTINGS}

    def _logits(self, clips: Tensor) -> Tensor:
        return self.model(self.pack(clips) if self.pack is not None else clips)

    def _scores(self, clips: Tensor, target: Tensor) -> Tensor:
        return self._logits(clips).softmax(-1).gather(1, target[:, None])[:, 0]

    def _perturb(self, clips: Tensor, mask: Tensor, kind: str | None = None) -> Tensor:
        return perturb(
            clips,
            mask,
            kind or self.perturbation,
            threshold=self.reverse_threshold,
            blend=self.reverse_blend,
        )

    def loss(self, clips: Tensor, mask: Tensor, target: Tensor) -> Tensor:
        """Per-clip loss ``λ1 ‖m‖₁ + λ2 TV_β(m) + F_c`` ``(B,)`` for masks ``(B, T)``."""
        score = self._scores(self._perturb(clips, mask), target)
        tv = tv_beta(mask, self.beta, self.tv_weights)
        return self.l1 * mask.abs().sum(-1) + self.tv * tv + score

    @torch.no_grad()
    def initial_masks(self, clips: Tensor, target: Tensor, original: Tensor) -> Tensor:
        """The binary starting mask ``(B, T)`` of every clip (see the module docstring)."""
        t = clips.shape[2]
        masks = centred_masks(t).to(clips.device, clips.dtype)
        full = self._scores(freeze(clips, torch.ones_like(masks[-1])), target)
        drops = torch.stack(
            [original - self._scores(self._perturb(clips, m), target) for m in masks]
        )
        return _pick_initial(
            drops.T.cpu(), (original - full).cpu(), masks.cpu(), self.init_fraction, self.init
        ).to(clips.device)

    def run(
        self,
        clips: Tensor,
        target: Tensor | None = None,
        labels: Tensor | None = None,
        on_step: Callable[[], None] | None = None,
    ) -> dict[str, Tensor]:
        """Search one mask per clip.

        Args:
            clips: ``(B, C, T, H, W)``, as ``pack`` takes them.
            target: the class each mask explains; None: the predicted class.
            labels: ground-truth classes, for ``label_score`` (the paper's CS); optional.
            on_step: called after each of the ``iterations`` optimiser steps (progress).

        Returns:
            Tensors on the clips' device: ``mask`` ``(B, T)`` (final, in [0, 1]),
            ``initial_mask`` ``(B, T)`` (binary), ``length``, ``initial_length``, ``target``,
            ``predicted``, ``os``, ``fs``, ``rs``, ``loss`` (final per-clip loss),
            ``drop_ratio``, ``drop_ratio_kept``, ``drop_difference`` and, with ``labels``,
            ``labels`` and ``label_score``.
        """
        clips = clips.detach()
        was_training = self.model.training
        flags = [(p, p.requires_grad) for p in self.model.parameters()]
        self.model.eval()
        try:
            for p, _ in flags:
                p.requires_grad_(False)
            return self._run(clips, target, labels, on_step)
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)
            self.model.train(was_training)

    def _run(
        self,
        clips: Tensor,
        target: Tensor | None,
        labels: Tensor | None,
        on_step: Callable[[], None] | None = None,
    ) -> dict[str, Tensor]:
        with torch.no_grad():
            probs = self._logits(clips).softmax(-1)
        predicted = probs.argmax(-1)
        target = predicted if target is None else check_classes(target, probs.shape[-1])
        target = target.to(clips.device).long().view(-1)
        original = probs.gather(1, target[:, None])[:, 0]
        start = self.initial_masks(clips, target, original)
        param = ((2 * start - 1) * self.init_logit).clone().requires_grad_(True)
        optimizer = torch.optim.Adam([param], lr=self.lr)
        with torch.enable_grad():
            for _ in range(self.iterations):
                optimizer.zero_grad(set_to_none=True)
                # summed over clips: each clip's gradient is its own single-clip gradient
                self.loss(clips, torch.sigmoid(param), target).sum().backward()
                optimizer.step()
                if on_step is not None:
                    on_step()
        with torch.no_grad():
            mask = torch.sigmoid(param).detach()
            loss = self.loss(clips, mask, target)
            fs = self._scores(self._perturb(clips, mask, "freeze"), target)
            rs = self._scores(self._perturb(clips, mask, "reverse"), target)
        out = {
            "mask": mask,
            "initial_mask": start,
            "length": (mask > self.length_threshold).sum(-1),
            "initial_length": start.sum(-1).long(),
            "target": target,
            "predicted": predicted,
            "os": original,
            "fs": fs,
            "rs": rs,
            "loss": loss,
        }
        out.update(
            {
                k: v.to(clips.device)
                for k, v in drop_measures(original, fs, rs, self.min_drop).items()
            }
        )
        if labels is not None:
            labels = torch.as_tensor(labels, device=clips.device).long().view(-1)
            # a label the classifier does not have (a head not trained on this dataset) is unknown
            known = (labels >= 0) & (labels < probs.shape[-1])
            out["labels"] = torch.where(known, labels, torch.full_like(labels, -1))
            score = probs.gather(1, labels.clamp(0, probs.shape[-1] - 1)[:, None])[:, 0]
            out["label_score"] = torch.where(known, score, torch.zeros_like(score))
        return out


# per-clip arrays a TemporalMaskStatistics keeps (scalars per clip unless noted)
MASK_FIELDS = (
    "index",
    "mask",  # (N, T)
    "initial_mask",  # (N, T)
    "length",
    "initial_length",
    "target",
    "predicted",
    "labels",
    "os",
    "fs",
    "rs",
    "label_score",
    "loss",
)


def _is_empty(state: Any) -> bool:
    """Whether a ``cat`` state holds nothing (a list before a sync, a tensor after)."""
    return state.numel() == 0 if torch.is_tensor(state) else len(state) == 0


def _mask_update(index: Tensor, out: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """One batch's per-clip values (labels −1 and label_score 0 where no labels are given)."""
    n = int(index.numel())
    values = {"index": index.view(-1).long()}
    for key in MASK_FIELDS[1:]:
        if key in out:
            values[key] = out[key].detach()
        elif key == "labels":
            values[key] = torch.full((n,), -1, dtype=torch.long, device=index.device)
        elif key == "label_score":
            values[key] = torch.zeros(n, dtype=torch.float64, device=index.device)
    return values


def _mask_compute(values: Mapping[str, Tensor], min_drop: float) -> dict[str, Any]:
    """Per-clip arrays sorted by clip index, the drop measures and the run-level summary."""
    order = torch.argsort(values["index"].cpu())
    clips = {k: v.cpu()[order].numpy() for k, v in values.items()}
    drops = drop_measures(clips["os"], clips["fs"], clips["rs"], min_drop)
    clips.update({k: v.numpy() for k, v in drops.items()})
    kept = clips["drop_ratio_kept"]
    summary = {
        "mask_length": summarize(clips["length"]),
        "drop_ratio": summarize(clips["drop_ratio"][kept]),
        "drop_difference": summarize(clips["drop_difference"]),
        "initial_length": summarize(clips["initial_length"]),
        "os": summarize(clips["os"]),
        "fs": summarize(clips["fs"]),
        "rs": summarize(clips["rs"]),
        "counts": {
            "clips": int(len(order)),
            "drop_ratio_kept": int(kept.sum()),
            "drop_ratio_filtered": int((~kept).sum()),
            "filtered_os_rs": int(((clips["os"] - clips["rs"]) <= min_drop).sum()),
            "filtered_os_fs": int(((clips["os"] - clips["fs"]) <= min_drop).sum()),
        },
    }
    labelled = clips["labels"] >= 0
    if labelled.any():
        summary["accuracy"] = float((clips["predicted"] == clips["labels"])[labelled].mean())
    return {"clips": clips, "summary": summary}


def temporal_mask_statistics(
    index: Tensor, out: Mapping[str, Tensor], min_drop: float = 0.001
) -> dict[str, Any]:
    """Functional twin of :class:`TemporalMaskStatistics` for one :meth:`TemporalMask.run`."""
    return _mask_compute(_mask_update(torch.as_tensor(index), out), min_drop)


class TemporalMaskStatistics(Metric):
    """Accumulates :meth:`TemporalMask.run` outputs of many batches (and processes).

    ``update(index, out)`` adds one batch (``index``: the clips' dataset indices); ``compute()``
    returns ``{"clips": per-clip arrays sorted by index, "summary": run-level numbers}`` with
    mean, std, count and a 95 % t-interval for mask length, drop ratio (filtered clips left out
    and counted) and drop difference. Under DDP the per-clip states are gathered from every
    process.
    """

    full_state_update = False

    def __init__(self, min_drop: float = 0.001, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.min_drop = float(min_drop)
        for key in MASK_FIELDS:
            self.add_state(key, default=[], dist_reduce_fx="cat")

    def update(self, index: Tensor, out: Mapping[str, Tensor]) -> None:
        """Add one batch of search results."""
        for key, value in _mask_update(torch.as_tensor(index, device=self.device), out).items():
            getattr(self, key).append(value.to(self.device))

    def compute(self) -> dict[str, Any]:
        """Per-clip arrays and the run summary."""
        if _is_empty(self.index):
            raise StbiasError("no clip was explained: the temporal-mask statistics are empty")
        values = {k: dim_zero_cat(getattr(self, k)) for k in MASK_FIELDS}
        return _mask_compute(values, self.min_drop)
