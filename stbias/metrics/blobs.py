"""Blob statistics of Grad-CAM maps (Mänttäri et al., Sec. 4.3, Table 3), Welch's t-test.

Each frame of a normalised map ``(T, H, W)`` in [0, 1] is scaled to uint8 (``round(255 L)``) and
given to OpenCV's ``SimpleBlobDetector`` with ``blobColor = 255`` (OpenCV's default looks for dark
blobs and finds none on a bright map) and OpenCV's other defaults; :func:`blob_params` lists
them all and the results record them. Per frame: the number of blobs (a frame with none counts 0
toward the mean count); per blob: its size, the keypoint diameter in pixels, and the distance
from the keypoint to the frame centre ``((W − 1) / 2, (H − 1) / 2)`` in pixels. Run level: the
mean count per frame, the mean size and mean centre distance over all blobs, with std and n.
Two runs are compared by Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``): counts
over frames, sizes and distances over blobs, with n beside every p.

Functional API: :func:`blob_params`, :func:`detect_blobs`, :func:`frame_blobs`,
:func:`blob_summary`, :func:`welch_ttest`; accumulating ``torchmetrics`` twin:
:class:`BlobStatistics`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from stbias.errors import StbiasError
from stbias.metrics.masks import _is_empty, summarize

# SimpleBlobDetector_Params attributes and their types
_PARAM_TYPES = {
    "blobColor": int,
    "collectContours": bool,
    "filterByArea": bool,
    "filterByCircularity": bool,
    "filterByColor": bool,
    "filterByConvexity": bool,
    "filterByInertia": bool,
    "maxArea": float,
    "maxCircularity": float,
    "maxConvexity": float,
    "maxInertiaRatio": float,
    "maxThreshold": float,
    "minArea": float,
    "minCircularity": float,
    "minConvexity": float,
    "minDistBetweenBlobs": float,
    "minInertiaRatio": float,
    "minRepeatability": int,
    "minThreshold": float,
    "thresholdStep": float,
}


def blob_params(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every ``SimpleBlobDetector`` setting: OpenCV's defaults, ``blobColor=255``, ``overrides``.

    Raises:
        StbiasError: an override that is not a detector setting.
    """
    import cv2

    defaults = cv2.SimpleBlobDetector_Params()
    params = {k: getattr(defaults, k) for k in _PARAM_TYPES if hasattr(defaults, k)}
    params["blobColor"] = 255
    for key, value in (overrides or {}).items():
        if key not in params:
            raise StbiasError(
                f"unknown blob detector setting {key!r}; valid: {', '.join(sorted(params))}"
            )
        params[key] = _PARAM_TYPES[key](value)
    return {k: (float(v) if isinstance(v, float) else v) for k, v in params.items()}


def _detector(params: Mapping[str, Any]) -> Any:
    import cv2

    p = cv2.SimpleBlobDetector_Params()
    for key, value in params.items():
        setattr(p, key, value)
    return cv2.SimpleBlobDetector_create(p)


def to_uint8(frame: Any) -> np.ndarray:
    """A map frame in [0, 1] as uint8 ``round(255 L)`` (values outside [0, 1] clipped)."""
    frame = np.asarray(frame, dtype=np.float64)
    return np.clip(np.rint(frame * 255.0), 0, 255).astype(np.uint8)


def detect_blobs(frame: Any, params: Mapping[str, Any] | None = None, detector: Any = None):
    """Blobs of one map frame ``(H, W)`` in [0, 1]: an array ``(n, 3)`` of ``(x, y, diameter)``."""
    detector = detector or _detector(params or blob_params())
    points = detector.detect(to_uint8(frame))
    return np.array([(k.pt[0], k.pt[1], k.size) for k in points], dtype=np.float64).reshape(-1, 3)


def frame_blobs(maps: Any, params: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Blobs of every frame of maps ``(N, T, H, W)`` (or ``(T, H, W)``) in [0, 1].

    Returns:
        ``counts`` ``(N, T)``; per blob ``clip``, ``frame``, ``x``, ``y``, ``size`` (diameter,
        pixels) and ``distance`` (to the frame centre, pixels).
    """
    maps = maps.detach().float().cpu().numpy() if torch.is_tensor(maps) else np.asarray(maps)
    if maps.ndim == 3:
        maps = maps[None]
    if maps.ndim != 4:
        raise StbiasError(f"blob statistics need maps (N, T, H, W), got shape {maps.shape}")
    n, t, h, w = maps.shape
    detector = _detector(params or blob_params())
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    counts = np.zeros((n, t), dtype=np.int64)
    rows = []
    for i in range(n):
        for j in range(t):
            found = detect_blobs(maps[i, j], detector=detector)
            counts[i, j] = len(found)
            for x, y, size in found:
                rows.append((i, j, x, y, size, float(np.hypot(x - centre[0], y - centre[1]))))
    table = np.array(rows, dtype=np.float64).reshape(-1, 6)
    return {
        "counts": counts,
        "clip": table[:, 0].astype(np.int64),
        "frame": table[:, 1].astype(np.int64),
        "x": table[:, 2],
        "y": table[:, 3],
        "size": table[:, 4],
        "distance": table[:, 5],
    }


def _stats(values: np.ndarray) -> dict[str, Any]:
    return summarize(values)


def blob_summary(counts: Any, sizes: Any, distances: Any) -> dict[str, Any]:
    """Run-level blob count per frame, blob size and centre distance (mean, std, n, interval)."""
    return {
        "blob_count": _stats(np.asarray(counts, dtype=np.float64)),
        "blob_size": _stats(np.asarray(sizes, dtype=np.float64)),
        "center_distance": _stats(np.asarray(distances, dtype=np.float64)),
    }


def welch_ttest(a: Any, b: Any) -> dict[str, Any]:
    """Welch's t-test (unequal variances) of two samples, with n and the means beside p.

    Returns:
        ``{"t", "p", "n": [n_a, n_b], "mean": [...], "std": [...]}``; ``t`` and ``p`` are None
        when a sample has fewer than two values or both are constant (no test possible).
    """
    from scipy import stats

    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    out: dict[str, Any] = {
        "t": None,
        "p": None,
        "n": [int(a.size), int(b.size)],
        "mean": [float(a.mean()) if a.size else None, float(b.mean()) if b.size else None],
        "std": [float(a.std()) if a.size else None, float(b.std()) if b.size else None],
    }
    if a.size < 2 or b.size < 2 or (a.var() == 0 and b.var() == 0):
        return out
    result = stats.ttest_ind(a, b, equal_var=False)
    out["t"], out["p"] = float(result.statistic), float(result.pvalue)
    return out


class BlobStatistics(Metric):
    """Accumulates blob statistics of Grad-CAM maps over batches (and processes).

    ``update(index, maps)`` detects the blobs of maps ``(B, T, H, W)`` of clips ``index``;
    ``compute()`` returns the per-frame counts ``(N, T)`` and per-blob arrays sorted by clip index,
    and the run summary (:func:`blob_summary`).

    Args:
        params: detector overrides on top of :func:`blob_params`.
    """

    full_state_update = False

    def __init__(self, params: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.params = blob_params(params)
        for key in ("index", "counts", "blob_clip", "blob_frame", "size", "distance", "xy"):
            self.add_state(key, default=[], dist_reduce_fx="cat")

    def update(self, index: Tensor, maps: Tensor) -> None:
        """Detect the blobs of one batch of maps."""
        found = frame_blobs(maps, self.params)
        index = torch.as_tensor(index).view(-1).long().cpu()
        dev = self.device
        self.index.append(index.to(dev))
        self.counts.append(torch.as_tensor(found["counts"], device=dev))
        # blobs carry their clip's dataset index, so shards from several processes can merge
        self.blob_clip.append(index[torch.as_tensor(found["clip"])].to(dev))
        self.blob_frame.append(torch.as_tensor(found["frame"], device=dev))
        self.size.append(torch.as_tensor(found["size"], device=dev))
        self.distance.append(torch.as_tensor(found["distance"], device=dev))
        xy = np.stack([found["x"], found["y"]], axis=1)
        self.xy.append(torch.as_tensor(xy, device=dev))

    def compute(self) -> dict[str, Any]:
        """Per-frame counts, per-blob arrays (sorted by clip, frame) and the summary."""
        if _is_empty(self.index):
            raise StbiasError("no clip was explained: the blob statistics are empty")
        index = dim_zero_cat(self.index).cpu()
        order = torch.argsort(index)
        counts = dim_zero_cat(self.counts).cpu()[order].numpy()
        blob_clip = dim_zero_cat(self.blob_clip).cpu().numpy()
        blob_frame = dim_zero_cat(self.blob_frame).cpu().numpy()
        by = np.lexsort((blob_frame, blob_clip))
        blobs = {
            "clip": blob_clip[by],
            "frame": blob_frame[by],
            "size": dim_zero_cat(self.size).cpu().numpy()[by],
            "distance": dim_zero_cat(self.distance).cpu().numpy()[by],
            "xy": dim_zero_cat(self.xy).cpu().numpy().reshape(-1, 2)[by],
        }
        return {
            "index": index[order].numpy(),
            "counts": counts,
            "blobs": blobs,
            "summary": blob_summary(counts, blobs["size"], blobs["distance"]),
            "params": dict(self.params),
        }
