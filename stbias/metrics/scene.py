"""Scene bias (Byvshev et al., CVIU'22, Appendix A): common place scores and linear probes.

* :func:`common_place`: a video's dominant place (the most frequent per-frame prediction; a tie
  goes to the lowest class index) and its common place score (the share of frames predicting it).
* :func:`score_curve`: Fig. A.12, the share of videos whose score is at least ``x``.
* :func:`common_places`: Table A.3's split, the most frequent dominant places that together hold
  more than half of the videos.
* :func:`linear_probe`: Table A.4's classifier on frozen features (a multinomial logistic
  regression on standardised features, fitted to convergence: the L2-regularised optimum).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from stbias.errors import StbiasError


def common_place(predictions: Sequence[int] | np.ndarray) -> tuple[int, float]:
    """The dominant place of one video's per-frame predictions and its common place score.

    Ties between equally frequent places go to the lowest class index, so the result does not
    depend on frame order.
    """
    preds = np.asarray(predictions, dtype=np.int64).ravel()
    if preds.size == 0:
        raise StbiasError("common_place needs the predictions of at least one frame; got none")
    if preds.min() < 0:
        raise StbiasError(f"place predictions are class indices >= 0; got {int(preds.min())}")
    counts = np.bincount(preds)
    place = int(np.argmax(counts))  # the first maximum: the lowest index among tied places
    return place, float(counts[place] / preds.size)


def score_curve(scores: Sequence[float] | np.ndarray, thresholds: Sequence[float] | np.ndarray):
    """Share of videos whose common place score is ``>= x`` for every ``x`` of ``thresholds``."""
    values = np.asarray(scores, dtype=np.float64).ravel()
    if values.size == 0:
        raise StbiasError("score_curve needs the score of at least one video; got none")
    xs = np.asarray(thresholds, dtype=np.float64).ravel()
    return (values[None, :] >= xs[:, None] - 1e-12).mean(axis=1)


def common_places(dominant: Sequence[int] | np.ndarray) -> list[int]:
    """The common places of Table A.3: places sorted by how many videos they dominate (ties: the
    lower index first), the shortest head of that list holding more than half of the videos."""
    places = np.asarray(dominant, dtype=np.int64).ravel()
    if places.size == 0:
        raise StbiasError("common_places needs the dominant place of at least one video")
    counts = np.bincount(places)
    order = sorted((int(p) for p in np.flatnonzero(counts)), key=lambda p: (-counts[p], p))
    chosen, held = [], 0
    for place in order:
        chosen.append(place)
        held += int(counts[place])
        if 2 * held > places.size:
            break
    return chosen


class LinearProbe(NamedTuple):
    """What :func:`linear_probe` returns."""

    predictions: np.ndarray  # the predicted class of every test row
    accuracy: float  # their top-1 accuracy
    iterations: int  # L-BFGS iterations the fit took
    converged: bool  # whether the gradient fell below ``tol`` within ``max_iter`` iterations
    weight: np.ndarray  # (classes, D) on standardised features; class k is row k
    bias: np.ndarray  # (classes,); a class with no training row never wins (-inf)
    mean: np.ndarray  # (D,) the standardisation: (x - mean) / std
    std: np.ndarray  # (D,)


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    seed: int = 0,
    c: float = 1.0,
    tol: float = 1e-8,
    max_iter: int = 10000,
) -> LinearProbe:
    """A linear classifier trained on frozen features, evaluated on held-out ones.

    Features ``(N, D)`` are standardised with the training set's mean and standard deviation,
    then a multinomial logistic regression (L-BFGS, inverse L2 strength ``c``) is fitted until the
    largest gradient entry is below ``tol``. The objective is strictly convex, so the fit is its
    one optimum, whatever path the optimizer took: features equal up to float rounding (an
    inflated 3D net on static clips and its 2D source) give the same classifier. A loose
    tolerance stops L-BFGS early at a point that depends on its path (scikit-learn's default
    ``1e-4`` left logits 0.7 apart for two such feature sets, and flipped predictions).

    Returns:
        The predictions on ``test_x``, their top-1 accuracy, the iterations taken, whether the
        fit converged (a fit that did not is still returned; the caller reports it), and the
        classifier itself: logits ``((x - mean) / std) @ weight.T + bias``.
    """
    train_x = np.asarray(train_x, dtype=np.float64)
    test_x = np.asarray(test_x, dtype=np.float64)
    train_y, test_y = np.asarray(train_y).ravel(), np.asarray(test_y).ravel()
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise StbiasError(
            f"linear_probe takes (N, D) features of one width; got {train_x.shape}, {test_x.shape}"
        )
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise StbiasError("linear_probe: every feature row needs one label")
    if len(np.unique(train_y)) < 2:
        raise StbiasError("linear_probe needs training images of at least two classes")
    if not (c > 0 and tol > 0 and max_iter >= 1):
        raise StbiasError(
            f"linear_probe takes c > 0, tol > 0 and max_iter >= 1; got c={c}, tol={tol}, "
            f"max_iter={max_iter}"
        )
    mean, std = train_x.mean(axis=0), train_x.std(axis=0)
    std[std < 1e-8] = 1.0
    classifier = LogisticRegression(
        C=float(c), tol=float(tol), max_iter=int(max_iter), random_state=int(seed)
    )
    with warnings.catch_warnings():  # reported through ``converged``
        warnings.simplefilter("ignore", ConvergenceWarning)
        classifier.fit((train_x - mean) / std, train_y)
    predictions = classifier.predict((test_x - mean) / std)
    iterations = int(np.max(classifier.n_iter_))
    classes = classifier.classes_.astype(np.int64)
    coef, intercept = classifier.coef_, classifier.intercept_
    if len(classes) == 2:  # scikit-learn's binary fit: one logit z for the second class
        coef, intercept = np.stack([np.zeros_like(coef[0]), coef[0]]), np.array([0.0, *intercept])
    weight = np.zeros((int(classes.max()) + 1, train_x.shape[1]))
    bias = np.full(int(classes.max()) + 1, -np.inf)
    weight[classes], bias[classes] = coef, intercept
    return LinearProbe(
        predictions,
        float((predictions == test_y).mean()),
        iterations,
        iterations < int(max_iter),
        weight,
        bias,
        mean,
        std,
    )
