"""Static/dynamic pair statistics: Kowal et al.'s layer-wise and unit-wise scores.

Every number is a function of six per-unit sums per factor — ``n``, ``Σa``, ``Σb``, ``Σa²``,
``Σb²``, ``Σab`` over the pairs ``(a_j, b_j)`` of that factor — kept in float64 about a per-unit
shift ``K`` (the first feature value seen for that unit), so that a large common offset costs no
precision. Shards with different shifts are moved to a common one before they are added, which
keeps every reduction a plain sum.

Bootstrap replicates ride along as extra rows of the same sums: row 0 holds the plain sums and row
``r ≥ 1`` the sums with each pair weighted by a Poisson(1) draw that depends only on
``(seed, pair id, r)``. One pass over the data yields the estimate and its interval, and a pair
gets the same weight whichever process sees it.

State tensors (``R = bootstrap``): ``shift (C,)``, and for F in {dynamic, static}
``{F}_n (R + 1,)`` and ``{F}_{a,b,aa,bb,ab} (R + 1, C)``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities.distributed import gather_all_tensors

from stbias.errors import StbiasError
from stbias.io import load_tensors, torch_save

FACTORS = ("dynamic", "static")
UNIT_CLASSES = ("dynamic", "static", "joint", "residual")
ESTIMATORS = ("pooled", "mean_corr")
_SUMS = ("a", "b", "aa", "bb", "ab")
_STATE_VERSION = 1
# a unit whose variance is this small against its second moment about the shift is constant
_DEAD_RTOL = 1e-12


def _check_lam(lam: float) -> float:
    lam = float(lam)
    if not -1.0 < lam < 1.0 or math.isnan(lam):
        raise StbiasError(f"lam={lam} is outside the valid range (-1, 1)")
    return lam


def _check_estimator(estimator: str) -> str:
    if estimator not in ESTIMATORS:
        raise StbiasError(
            f"unknown estimator {estimator!r}; valid estimators: {', '.join(ESTIMATORS)}"
        )
    return estimator


def _as_features(z: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(z)
    if t.ndim != 2:
        raise StbiasError(f"{name} must have shape (n, C); got shape {tuple(t.shape)}")
    if not (
        t.is_floating_point() or t.dtype in (torch.int32, torch.int64, torch.int16, torch.uint8)
    ):
        raise StbiasError(f"{name} must hold real numbers; got dtype {t.dtype}")
    return t


def _factor_codes(factor: str | Sequence[str], n: int) -> np.ndarray:
    """Map a factor name, or one name per pair, to codes 0 (dynamic) / 1 (static)."""
    if isinstance(factor, str):
        names = [factor]
    else:
        names = list(factor)
        if len(names) != n:
            raise StbiasError(f"factor has {len(names)} entries for {n} pairs; give one per pair")
    codes = np.empty(len(names), dtype=np.int64)
    for i, name in enumerate(names):
        if name not in FACTORS:
            raise StbiasError(f"unknown factor {name!r}; valid factors: {', '.join(FACTORS)}")
        codes[i] = FACTORS.index(name)
    return np.full(n, codes[0]) if isinstance(factor, str) else codes


_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
# Poisson(1) cumulative distribution, enough terms that the tail is below 2**-53
_POISSON1_CDF = np.cumsum([math.exp(-1.0) / math.factorial(k) for k in range(20)])


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _M64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _M64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _M64
        return x ^ (x >> np.uint64(31))


def poisson_weights(ids: np.ndarray, replicates: int, seed: int) -> np.ndarray:
    """Poisson(1) bootstrap weights ``(n, replicates)``, a function of (seed, id, replicate)."""
    ids = np.asarray(ids, dtype=np.int64).astype(np.uint64)
    reps = np.arange(1, replicates + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        key = _splitmix64(
            _splitmix64(np.uint64(seed) + ids[:, None] * np.uint64(0x100000001B3)) ^ reps
        )
    u = (key >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return np.searchsorted(_POISSON1_CDF, u, side="right").astype(np.float64)


def _accumulate(
    states: dict[str, torch.Tensor],
    a: torch.Tensor,
    b: torch.Tensor,
    codes: np.ndarray,
    ids: np.ndarray,
    bootstrap: int,
    seed: int,
) -> None:
    """Add the shifted sums of the pairs ``(a, b)`` (float64, ``(n, C)``) to ``states`` in place."""
    shift = states["shift"]
    a = a - shift
    b = b - shift
    for code, name in enumerate(FACTORS):
        rows = np.flatnonzero(codes == code)
        if rows.size == 0:
            continue
        sel = torch.as_tensor(rows, device=a.device)
        fa, fb = a.index_select(0, sel), b.index_select(0, sel)
        w = torch.ones(rows.size, bootstrap + 1, dtype=torch.float64, device=a.device)
        if bootstrap:
            w[:, 1:] = torch.from_numpy(poisson_weights(ids[rows], bootstrap, seed)).to(a.device)
        wt = w.T
        states[f"{name}_n"] += w.sum(0)
        states[f"{name}_a"] += wt @ fa
        states[f"{name}_b"] += wt @ fb
        states[f"{name}_aa"] += wt @ (fa * fa)
        states[f"{name}_bb"] += wt @ (fb * fb)
        states[f"{name}_ab"] += wt @ (fa * fb)


def _rebase(states: dict[str, torch.Tensor], new_shift: torch.Tensor) -> dict[str, torch.Tensor]:
    """Return the sums expressed about ``new_shift`` instead of ``states['shift']``."""
    d = states["shift"] - new_shift
    out = {"shift": new_shift.clone()}
    for name in FACTORS:
        n = states[f"{name}_n"][:, None]
        sa, sb = states[f"{name}_a"], states[f"{name}_b"]
        out[f"{name}_n"] = states[f"{name}_n"].clone()
        out[f"{name}_a"] = sa + n * d
        out[f"{name}_b"] = sb + n * d
        out[f"{name}_aa"] = states[f"{name}_aa"] + 2 * d * sa + n * d * d
        out[f"{name}_bb"] = states[f"{name}_bb"] + 2 * d * sb + n * d * d
        out[f"{name}_ab"] = states[f"{name}_ab"] + d * (sa + sb) + n * d * d
    return out


def _moments(states: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Per-factor, per-row moments ``(R + 1, C)`` from the shifted sums."""
    out: dict[str, Any] = {}
    tot_n = 0
    tot_s = 0
    tot_ss = 0
    for name in FACTORS:
        n = states[f"{name}_n"][:, None]
        safe = n.clamp_min(1e-300)
        mean_a, mean_b = states[f"{name}_a"] / safe, states[f"{name}_b"] / safe
        m = 0.5 * (mean_a + mean_b)
        second = (states[f"{name}_aa"] + states[f"{name}_bb"]) / (2 * safe)
        out[name] = {
            "n": n[:, 0],
            "mean_a": mean_a,
            "mean_b": mean_b,
            "cov": states[f"{name}_ab"] / safe - m * m,
            "var": second - m * m,
            "second": second,
            "var_a": states[f"{name}_aa"] / safe - mean_a * mean_a,
            "var_b": states[f"{name}_bb"] / safe - mean_b * mean_b,
        }
        tot_n = tot_n + 2 * n
        tot_s = tot_s + states[f"{name}_a"] + states[f"{name}_b"]
        tot_ss = tot_ss + states[f"{name}_aa"] + states[f"{name}_bb"]
    mean_all = tot_s / tot_n.clamp_min(1e-300)
    out["var_all"] = tot_ss / tot_n.clamp_min(1e-300) - mean_all * mean_all
    return out


def _scores(states: dict[str, torch.Tensor], lam: float, estimator: str) -> dict[str, Any]:
    """Layer-wise and unit-wise results for every row of the sums (row 0 = the estimate).

    Returns tensors: ``scores`` (R + 1, 2), ``dims`` (R + 1, 3), ``units`` (R + 1, 5) in the order
    dynamic, static, joint, residual, dead, ``unit_scores`` (2, C) of row 0.
    """
    mom = _moments(states)
    num_units = states["shift"].numel()
    dead = torch.zeros_like(mom["var_all"], dtype=torch.bool)
    unit = []
    for name in FACTORS:
        f = mom[name]
        is_dead = f["var"] <= _DEAD_RTOL * f["second"]
        dead |= is_dead
        unit.append(torch.where(is_dead, 0.0, f["cov"] / torch.where(is_dead, 1.0, f["var"])))
    s_dyn = torch.where(dead, 0.0, unit[0])
    s_stat = torch.where(dead, 0.0, unit[1])

    if estimator == "pooled":
        big_v = mom["var_all"].clamp_min(0).sum(1)
        scores = torch.stack([mom[name]["cov"].sum(1) for name in FACTORS], 1)
        scores = torch.where(big_v[:, None] > 0, scores / big_v.clamp_min(1e-300)[:, None], 0.0)
    else:
        cols = []
        for name in FACTORS:
            f = mom[name]
            ok = (f["var_a"] > _DEAD_RTOL * f["second"]) & (f["var_b"] > _DEAD_RTOL * f["second"])
            denom = torch.sqrt(torch.where(ok, f["var_a"] * f["var_b"], 1.0))
            r = torch.where(
                ok,
                (
                    states[f"{name}_ab"] / f["n"].clamp_min(1e-300)[:, None]
                    - f["mean_a"] * f["mean_b"]
                )
                / denom,
                0.0,
            )
            cols.append(r.sum(1) / ok.sum(1).clamp_min(1))
        scores = torch.stack(cols, 1)

    logits = torch.cat([scores, torch.ones_like(scores[:, :1])], 1)
    p = torch.softmax(logits, 1)
    dims_fs = torch.floor(p[:, :2] * num_units)
    dims = torch.cat([dims_fs, num_units - dims_fs.sum(1, keepdim=True)], 1)

    # a dead unit has no correlation: residual whatever λ (its scores are 0, above a negative λ)
    above_d, above_s = (s_dyn > lam) & ~dead, (s_stat > lam) & ~dead
    joint = above_d & above_s
    counts = torch.stack(
        [
            (above_d & ~above_s).sum(1),
            (above_s & ~above_d).sum(1),
            joint.sum(1),
            (~above_d & ~above_s).sum(1),
            dead.sum(1),
        ],
        1,
    )
    return {
        "scores": scores,
        "dims": dims,
        "units": counts,
        "unit_scores": torch.stack([s_dyn[0], s_stat[0]]),
    }


def _interval(values: torch.Tensor, level: float) -> list[float]:
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(values.to(torch.float64), q.to(values.device)).tolist()
    return [lo, hi]


def _report(
    states: dict[str, torch.Tensor], lam: float, estimator: str, level: float
) -> dict[str, Any]:
    """The per-layer entry of ``results.json`` (plus ``unit_scores``) from the sums."""
    lam = _check_lam(lam)
    _check_estimator(estimator)
    n_pairs = {name: int(round(states[f"{name}_n"][0].item())) for name in FACTORS}
    for name, n in n_pairs.items():
        if n < 2:
            raise StbiasError(
                f"factor {name!r} has {n} pair(s); at least 2 are needed to score a layer"
            )
    res = _scores(states, lam, estimator)
    num_units = states["shift"].numel()
    dims = res["dims"][0].round().long().tolist()
    units = res["units"][0].tolist()
    out: dict[str, Any] = {
        "scores": {name: float(res["scores"][0, k]) for k, name in enumerate(FACTORS)},
        "dims": dict(zip(("dynamic", "static", "residual"), dims)),
        "percent": {
            k: 100.0 * v / num_units for k, v in zip(("dynamic", "static", "residual"), dims)
        },
        "lam": lam,
        "units": dict(zip((*UNIT_CLASSES, "dead"), units)),
        "n_pairs": n_pairs,
        "estimator": estimator,
        "unit_scores": {
            name: res["unit_scores"][k].cpu().numpy() for k, name in enumerate(FACTORS)
        },
    }
    replicates = res["scores"].shape[0] - 1
    if replicates:
        # a replicate that drew fewer than two pairs of a factor has no score
        ok = torch.ones(replicates, dtype=torch.bool, device=res["scores"].device)
        for name in FACTORS:
            ok &= states[f"{name}_n"][1:] >= 2
        sc, dm, un = res["scores"][1:][ok], res["dims"][1:][ok], res["units"][1:][ok]
        out["ci"] = {
            "level": level,
            "replicates": int(ok.sum()),
            "scores": {name: _interval(sc[:, k], level) for k, name in enumerate(FACTORS)},
            "dims": {
                name: _interval(dm[:, k], level)
                for k, name in enumerate(("dynamic", "static", "residual"))
            },
            "percent": {
                name: [100.0 * v / num_units for v in _interval(dm[:, k], level)]
                for k, name in enumerate(("dynamic", "static", "residual"))
            },
            "units": {
                name: _interval(un[:, k], level) for k, name in enumerate((*UNIT_CLASSES, "dead"))
            },
        }
    return out


def _empty_states(
    num_units: int, bootstrap: int, device: torch.device | str | None = None
) -> dict[str, torch.Tensor]:
    kw = {"dtype": torch.float64, "device": device}
    states = {"shift": torch.zeros(num_units, **kw)}
    for name in FACTORS:
        states[f"{name}_n"] = torch.zeros(bootstrap + 1, **kw)
        for s in _SUMS:
            states[f"{name}_{s}"] = torch.zeros(bootstrap + 1, num_units, **kw)
    return states


def _check_pairs(z1: torch.Tensor, z2: torch.Tensor) -> None:
    if z1.shape != z2.shape:
        raise StbiasError(
            f"pair members differ in shape: z1 {tuple(z1.shape)} vs z2 {tuple(z2.shape)}"
        )
    for name, z in (("z1", z1), ("z2", z2)):
        bad = ~torch.isfinite(z)
        if bool(bad.any()):
            rows = torch.nonzero(bad.any(1)).flatten()[:5].tolist()
            raise StbiasError(
                f"{name} holds {int(bad.sum())} non-finite value(s) (NaN or inf), "
                f"first rows {rows}; features must be finite"
            )


def score_pairs(
    z1: Any,
    z2: Any,
    factor: str | Sequence[str],
    lam: float = 0.5,
    estimator: str = "pooled",
    bootstrap: int = 0,
    seed: int = 0,
    level: float = 0.95,
    ids: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Score one layer from its pooled pair features (docs/measures.md).

    Args:
        z1: first members of the pairs, array or tensor ``(n, C)``.
        z2: second members, ``(n, C)``.
        factor: ``"dynamic"`` or ``"static"`` per pair (or one name for all pairs).
        lam: unit-wise threshold λ in (−1, 1); a score equal to λ is not above it.
        estimator: ``"pooled"`` (Σ cov / Σ var, the authors' form) or ``"mean_corr"`` (mean of
            per-unit Pearson correlations) for the layer-wise scores ``S_F``.
        bootstrap: number of bootstrap replicates over pairs (0: no intervals).
        seed: seed of the bootstrap weights.
        level: coverage of the bootstrap intervals.
        ids: pair identities for the bootstrap weights (default ``0..n-1``); pairs sharing an id
            are resampled together.

    Returns:
        ``scores``, ``dims``, ``percent``, ``lam``, ``units`` (dynamic, static, joint, residual,
        and dead — dead units are also counted as residual), ``n_pairs``, ``estimator``,
        ``unit_scores`` (``{"dynamic": (C,), "static": (C,)}`` arrays, 0 for dead units) and,
        when ``bootstrap > 0``, ``ci``.
    """
    lam = _check_lam(lam)
    _check_estimator(estimator)
    t1, t2 = _as_features(z1, "z1"), _as_features(z2, "z2")
    _check_pairs(t1, t2)
    n = t1.shape[0]
    codes = _factor_codes(factor, n)
    ids_arr = np.arange(n) if ids is None else np.asarray(ids, dtype=np.int64)
    t1, t2 = t1.to(torch.float64), t2.to(torch.float64)
    states = _empty_states(t1.shape[1], int(bootstrap), t1.device)
    if n:
        states["shift"] = t1[0].clone()
    _accumulate(states, t1, t2, codes, ids_arr, int(bootstrap), int(seed))
    return _report(states, lam, estimator, level)


class PairStatistics(Metric):
    """Streaming pair statistics of one layer: ``update`` adds pairs, ``compute(lam)`` scores them.

    ``update(z1, z2, factor)`` takes pooled features ``(B, C)`` on any device; states are float64
    sums (``dist_reduce_fx="sum"``), so processes merge by addition. ``compute`` returns the same
    dict as :func:`score_pairs` on the stacked data. ``save_state`` / ``load_state`` keep partial
    sums on disk, for resuming a run and for re-thresholding λ without a forward pass.

    Args:
        num_units: channels ``C`` of the layer.
        bootstrap: bootstrap replicates carried along (memory grows as ``(bootstrap + 1) · C``).
        seed: seed of the bootstrap weights.
        level: coverage of the bootstrap intervals.
        estimator: layer-wise estimator, see :func:`score_pairs`.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(
        self,
        num_units: int,
        bootstrap: int = 0,
        seed: int = 0,
        level: float = 0.95,
        estimator: str = "pooled",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("compute_with_cache", False)
        super().__init__(**kwargs)
        if int(num_units) < 1:
            raise StbiasError(f"num_units={num_units}; a layer needs at least one unit")
        if int(bootstrap) < 0:
            raise StbiasError(f"bootstrap={bootstrap}; give 0 (no intervals) or a positive count")
        if not 0 < level < 1:
            raise StbiasError(f"level={level} is outside (0, 1)")
        self.num_units = int(num_units)
        self.bootstrap = int(bootstrap)
        self.seed = int(seed)
        self.level = float(level)
        self.estimator = _check_estimator(estimator)
        self._next_id = 0
        self.meta: dict[str, Any] = {}  # plain values saved with the sums (see save_state)
        for key, value in _empty_states(self.num_units, self.bootstrap).items():
            # after the shift agreement in _sync_dist every process holds the same shift
            self.add_state(key, default=value, dist_reduce_fx="max" if key == "shift" else "sum")

    @property
    def _states(self) -> dict[str, torch.Tensor]:
        return {key: getattr(self, key) for key in self._defaults}

    def _set_states(self, states: dict[str, torch.Tensor]) -> None:
        for key, value in states.items():
            setattr(self, key, value.to(device=self.shift.device, dtype=torch.float64))

    def sums(self) -> dict[str, torch.Tensor]:
        """The running sums as detached CPU tensors (what :meth:`load_sums` takes back)."""
        return {k: v.detach().cpu() for k, v in self._states.items()}

    def load_sums(self, sums: Mapping[str, torch.Tensor]) -> PairStatistics:
        """Replace the running sums with ``sums`` (from :meth:`sums` of a metric of the same
        units and replicates); returns ``self``."""
        expected = {k: tuple(v.shape) for k, v in self._states.items()}
        found = {k: tuple(torch.as_tensor(v).shape) for k, v in dict(sums).items()}
        if found != expected:
            raise StbiasError(
                f"the sums hold other shapes than this metric's ({self.num_units} units, "
                f"{self.bootstrap} bootstrap replicates)"
            )
        self._set_states({k: torch.as_tensor(v) for k, v in sums.items()})
        self._update_count += 1
        return self

    def snapshot(self) -> PairStatistics:
        """A new metric holding these sums as they are now (e.g. synchronised over processes)."""
        copy = PairStatistics(
            self.num_units,
            bootstrap=self.bootstrap,
            seed=self.seed,
            level=self.level,
            estimator=self.estimator,
        )
        copy.meta = dict(self.meta)
        return copy.load_sums(self.sums())

    @property
    def n_pairs(self) -> dict[str, int]:
        """Pairs seen so far per factor (this process only, before a sync)."""
        return {name: int(round(getattr(self, f"{name}_n")[0].item())) for name in FACTORS}

    def _is_empty(self) -> bool:
        return all(float(getattr(self, f"{name}_n")[0]) == 0 for name in FACTORS)

    def update(
        self,
        z1: torch.Tensor,
        z2: torch.Tensor,
        factor: str | Sequence[str],
        ids: Sequence[int] | torch.Tensor | None = None,
    ) -> None:
        """Add a batch of pairs.

        Args:
            z1: first members ``(B, C)``.
            z2: second members ``(B, C)``.
            factor: ``"dynamic"`` / ``"static"``, for the whole batch or one per pair.
            ids: pair identities for the bootstrap weights (e.g. clip indices), so that a pair
                weighs the same on any process; by default a running count of this instance.
        """
        z1, z2 = _as_features(z1, "z1"), _as_features(z2, "z2")
        _check_pairs(z1, z2)
        if z1.shape[1] != self.num_units:
            raise StbiasError(
                f"features have {z1.shape[1]} units; this metric holds {self.num_units}"
            )
        n = z1.shape[0]
        if n == 0:
            return
        codes = _factor_codes(factor, n)
        if ids is None:
            ids_arr = np.arange(self._next_id, self._next_id + n)
            self._next_id += n
        else:
            ids_arr = np.asarray(torch.as_tensor(ids).cpu(), dtype=np.int64).reshape(-1)
            if ids_arr.size != n:
                raise StbiasError(f"ids has {ids_arr.size} entries for {n} pairs")
        z1 = z1.to(device=self.shift.device, dtype=torch.float64)
        z2 = z2.to(device=self.shift.device, dtype=torch.float64)
        states = self._states
        if self._is_empty():
            states["shift"] = z1[0].clone()
        _accumulate(states, z1, z2, codes, ids_arr, self.bootstrap, self.seed)
        self._set_states(states)

    def compute(self, lam: float = 0.5, estimator: str | None = None) -> dict[str, Any]:
        """Scores, dims, unit classes (and intervals) at threshold ``lam``, over all processes."""
        return self.report(lam, estimator)

    def report(self, lam: float = 0.5, estimator: str | None = None) -> dict[str, Any]:
        """Like ``compute`` from the states as they are now (no synchronisation of its own)."""
        return _report(self._states, lam, estimator or self.estimator, self.level)

    def _sync_dist(self, dist_sync_fn=gather_all_tensors, process_group=None) -> None:
        # agree on one shift (that of the lowest rank holding data) so the sums add exactly
        local = torch.cat(
            [
                torch.tensor(
                    [0.0 if self._is_empty() else 1.0],
                    dtype=torch.float64,
                    device=self.shift.device,
                ),
                self.shift,
            ]
        )
        gathered = dist_sync_fn(local, group=process_group or self.process_group)
        for row in gathered:
            if float(row[0]) > 0:
                self._set_states(_rebase(self._states, row[1:].to(self.shift.device)))
                break
        super()._sync_dist(dist_sync_fn, process_group)

    def merge_state(self, incoming_state: dict[str, Any] | Metric) -> None:
        """Add another shard's sums (a ``PairStatistics`` or its ``metric_state``) to this one."""
        if isinstance(incoming_state, PairStatistics):
            incoming_state = incoming_state.metric_state
        other = {
            k: torch.as_tensor(v, dtype=torch.float64, device=self.shift.device)
            for k, v in dict(incoming_state).items()
        }
        if (
            other["shift"].shape != self.shift.shape
            or other["dynamic_a"].shape != self.dynamic_a.shape
        ):
            raise StbiasError(
                f"cannot merge a shard of {other['shift'].numel()} units and "
                f"{other['dynamic_a'].shape[0] - 1} bootstrap replicates into one of "
                f"{self.num_units} units and {self.bootstrap}"
            )
        other_empty = all(float(other[f"{name}_n"][0]) == 0 for name in FACTORS)
        if self._is_empty() and not other_empty:
            self._set_states(_rebase(self._states, other["shift"]))
        elif not other_empty:
            other = _rebase(other, self.shift)
        super().merge_state(other)
        self._update_count += 1

    def save_state(self, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> None:
        """Write the partial sums to ``path`` atomically (a torch file of plain tensors).

        Args:
            path: the file.
            meta: plain values stored beside the sums (e.g. the cache key they belong to); a
                later :meth:`from_file` puts them in ``metric.meta``.
        """
        payload = {
            "meta": dict(meta or {}),
            "version": torch.tensor(_STATE_VERSION),
            "num_units": torch.tensor(self.num_units),
            "bootstrap": torch.tensor(self.bootstrap),
            "seed": torch.tensor(self.seed),
            "next_id": torch.tensor(self._next_id),
            **{f"state.{k}": v.detach().cpu() for k, v in self._states.items()},
        }
        torch_save(payload, path)

    def load_state(self, path: str | os.PathLike) -> PairStatistics:
        """Replace this metric's sums with those saved at ``path``; returns ``self``."""
        payload = load_tensors(path, what="pair statistics")
        version = int(payload.get("version", -1))
        if version != _STATE_VERSION:
            raise StbiasError(
                f"{path}: state version {version}; this stbias reads {_STATE_VERSION}"
            )
        got = (int(payload["num_units"]), int(payload["bootstrap"]), int(payload["seed"]))
        want = (self.num_units, self.bootstrap, self.seed)
        if got != want:
            raise StbiasError(
                f"{path} holds (units, bootstrap, seed) = {got}; this metric expects {want}"
            )
        self._set_states(
            {k[len("state.") :]: v for k, v in payload.items() if k.startswith("state.")}
        )
        self._next_id = int(payload["next_id"])
        self.meta = dict(payload.get("meta") or {})
        self._update_count += 1
        return self

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kwargs: Any) -> PairStatistics:
        """A metric holding the sums saved at ``path``."""
        payload = load_tensors(path, what="pair statistics")
        if not isinstance(payload, dict) or not {"num_units", "bootstrap", "seed"} <= set(payload):
            raise StbiasError(f"{path} holds no pair statistics")
        metric = cls(
            int(payload["num_units"]),
            bootstrap=int(payload["bootstrap"]),
            seed=int(payload["seed"]),
            **kwargs,
        )
        return metric.load_state(path)
