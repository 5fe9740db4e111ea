"""Places+Faces+MNIST ``P+F+M_x_y`` (Byvshev et al., CVIU'22, Sec. 4.1).

A face crop moves over a static scene photograph of one of ``x`` place classes along one of ``y``
motion classes; motion class ``m`` writes the decimal digits of ``m`` one after the other (each
digit a BrushMNIST trajectory over the whole frame, the frames shared equally between digits).
Label ``place * y + motion``. Sources: see :mod:`stbias.data.sources`.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from stbias.data.brushmnist import DigitPools, split_seed
from stbias.data.sources import face_images, jittered_crop, lfw_face, load, place_images
from stbias.errors import StbiasError


class PlacesFacesMNIST(Dataset):
    """P+F+M clips: ``video`` ``(T, H, W, 3)`` uint8 with ``place_label`` and ``shape_label``.

    Args:
        num_places: ``x``, number of place classes (embedded: at most 18).
        num_motions: ``y``, number of motion classes (digit sequences ``0 .. y-1``).
        root: same as ``mnist_root``.
        num_frames: frames per clip.
        sampling_rate: the trajectory has ``num_frames * sampling_rate`` positions and the clip
            shows every ``sampling_rate``-th.
        size: frame side.
        face_size: side of the face brush; default ``size // 4``.
        num_samples: dataset length; sample ``i`` has class ``i % (x * y)`` (balanced).
        mnist_root / places_root / faces_root: real sources (torchvision MNIST root,
            Places365-layout folder, LFW-layout folder); default the embedded ones.
    """

    def __init__(
        self,
        root: str | None = None,
        split: str = "train",
        *,
        num_places: int = 8,
        num_motions: int = 16,
        num_frames: int = 16,
        sampling_rate: int = 1,
        size: int = 64,
        face_size: int | None = None,
        num_samples: int = 10000,
        seed: int = 0,
        mnist_root: str | None = None,
        places_root: str | None = None,
        faces_root: str | None = None,
    ):
        if split not in ("train", "test", "val"):
            raise StbiasError(f"unknown split {split!r}; valid: train, test (val = test)")
        if num_places < 1 or num_motions < 1:
            raise StbiasError(
                f"num_places and num_motions must be >= 1, got {num_places}, {num_motions}"
            )
        self.split = "train" if split == "train" else "test"
        self.num_places, self.num_motions = int(num_places), int(num_motions)
        self.num_frames, self.size = int(num_frames), int(size)
        self.sampling_rate = int(sampling_rate)
        if self.sampling_rate < 1:
            raise StbiasError(f"sampling_rate must be >= 1, got {sampling_rate}")
        self.face_size = int(face_size or max(8, size // 4))
        if self.face_size >= self.size - 4:
            raise StbiasError(f"face_size {self.face_size} does not fit frames of {size}")
        longest = len(str(self.num_motions - 1))
        if self.num_frames < longest:
            raise StbiasError(f"{num_frames} frames cannot draw {longest}-digit motion classes")
        self.num_samples, self.seed = int(num_samples), int(seed)
        self.mnist_root = mnist_root or root
        self.places_root, self.faces_root = places_root, faces_root
        # check the sources now, so a bad folder fails at construction, not in a worker
        self.place_names = place_images(self.places_root, self.num_places)[0]
        face_images(self.faces_root)
        self._pools: DigitPools | None = None

    @property
    def num_classes(self) -> int:
        return self.num_places * self.num_motions

    @property
    def label_factors(self) -> tuple[tuple[str, str, int], ...]:
        """label = place * num_motions + motion: the place is the appearance, then the motion."""
        return (("place", "appearance", self.num_places), ("motion", "motion", self.num_motions))

    @property
    def pools(self) -> DigitPools:
        if self._pools is None:
            self._pools = DigitPools(self.mnist_root, self.split)
        return self._pools

    def __len__(self) -> int:
        return self.num_samples

    def clip_info(self, index: int) -> dict[str, Any]:
        """``{"id", "label"}`` of sample ``index`` (labels cycle through the classes)."""
        return {"id": f"pfm_{self.split}_{index}", "label": int(index) % self.num_classes}

    def motion_positions(self, motion: int, rng: np.random.Generator) -> np.ndarray:
        """Positions ``(T, 2)`` writing the decimal digits of ``motion`` in turn."""
        digits = [int(c) for c in str(motion)]
        total = self.num_frames * self.sampling_rate
        counts = np.diff(np.round(np.linspace(0, total, len(digits) + 1)).astype(int))
        canvas = self.size - self.face_size
        parts = [self.pools.trajectory(d, canvas, int(k), rng)[0] for d, k in zip(digits, counts)]
        return np.concatenate(parts)[:: self.sampling_rate]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        label = index % self.num_classes
        place, motion = divmod(label, self.num_motions)
        rng = np.random.default_rng([self.seed, split_seed(self.split), index])
        images = place_images(self.places_root, self.num_places)[1][place]
        background = jittered_crop(load(images[int(rng.integers(len(images)))]), self.size, rng)
        faces = face_images(self.faces_root)
        face = lfw_face(load(faces[int(rng.integers(len(faces)))]))
        face = cv2.resize(face, (self.face_size, self.face_size), interpolation=cv2.INTER_AREA)
        positions = self.motion_positions(motion, rng)
        frames = np.broadcast_to(background, (self.num_frames,) + background.shape).copy()
        f = self.face_size
        for t, (y, x) in enumerate(positions):
            frames[t, y : y + f, x : x + f] = face
        return {
            "video": torch.from_numpy(frames),
            "label": label,
            "place_label": place,
            "shape_label": motion,
            "motion_label": motion,
            "appearance_label": place,
            "id": f"pfm_{self.split}_{index}",
            "index": index,
            "trajectory": torch.from_numpy(positions + f // 2),
        }
