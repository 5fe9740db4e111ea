"""P+F+M with mixed cues: half of the classes told apart by the place, half only by the motion.

Built on :class:`~stbias.data.pfm.PlacesFacesMNIST` with ``k + 1`` places and ``k`` motions
(``k = num_groups``):

* appearance classes ``0 .. k-1``: class ``c`` is place ``c + 1``, the face moving along any of
  the ``k`` motions (cycled, so every motion appears equally often in every class): the place
  alone names the class;
* motion-only classes ``k .. 2k-1``: class ``k + m`` is place 0 with motion ``m``: these classes
  share their static appearance distribution and differ only in motion.

A model that reads only static appearance reaches at best ``(k + 1) / 2k`` (every appearance
class, and chance among the motion-only ones); the motion-only accuracy measures the use of
dynamics. Samples are those of the underlying P+F+M, relabelled: ``label`` is the class above,
``motion_only`` is 1 for the motion-only classes; ``place_label`` and ``shape_label`` /
``motion_label`` stay the P+F+M ones; ``index`` is the position in this dataset.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from stbias.data.pfm import PlacesFacesMNIST
from stbias.errors import StbiasError


class MixedCuePFM(Dataset):
    """``2 * num_groups`` classes, balanced: sample ``i`` has class ``i % (2 * num_groups)``.

    Args:
        num_groups: ``k``, the number of appearance classes and of motion-only classes
            (embedded places: ``k + 1 <= 18``; single-digit motions: ``k <= 10``).
        num_samples: dataset length.
        **pfm: the other arguments of :class:`PlacesFacesMNIST` (``split``, ``num_frames``,
            ``sampling_rate``, ``size``, ``face_size``, ``seed``, source folders).
    """

    def __init__(self, num_groups: int = 4, num_samples: int = 2000, **pfm: Any) -> None:
        k = int(num_groups)
        if not 2 <= k <= 10:
            raise StbiasError(
                f"num_groups={num_groups}; give 2 .. 10 (k appearance classes on places 1..k, "
                "k motion-only classes on place 0 with single-digit motions 0..k-1)"
            )
        if int(num_samples) < 1:
            raise StbiasError(f"num_samples={num_samples}; give at least 1")
        self.num_groups = k
        self.num_samples = int(num_samples)
        cycles = -(-self.num_samples // (2 * k))
        self.base = PlacesFacesMNIST(
            num_places=k + 1,
            num_motions=k,
            num_samples=(k + 1) * k * cycles,
            **pfm,
        )
        self.channels = 3

    @property
    def num_classes(self) -> int:
        return 2 * self.num_groups

    @property
    def motion_only_classes(self) -> list[int]:
        """The classes that differ from one another only in motion."""
        return list(range(self.num_groups, 2 * self.num_groups))

    def __len__(self) -> int:
        return self.num_samples

    def _base_index(self, index: int) -> tuple[int, int]:
        k = self.num_groups
        label = index % (2 * k)
        cycle = index // (2 * k)
        if label < k:
            place, motion = label + 1, cycle % k
        else:
            place, motion = 0, label - k
        # the cycle picks a fresh P+F+M sample (background crop, face, trajectory) of that pair
        return label, (place * k + motion) + (k + 1) * k * cycle

    def clip_info(self, index: int) -> dict[str, Any]:
        """``{"id", "label"}`` of sample ``index``."""
        label, base = self._base_index(int(index))
        return {"id": f"{self.base.clip_info(base)['id']}_mixed", "label": label}

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        label, base = self._base_index(int(index))
        sample = self.base[base]
        sample.update(
            label=label,
            motion_only=int(label >= self.num_groups),
            index=int(index),
            id=f"{sample['id']}_mixed",
        )
        return sample
