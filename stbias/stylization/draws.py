"""Seeded draws that pair and flow views share: one generator per clip, keyed by its index.

Every random choice of clip ``i`` comes from a generator seeded by ``(seed, index_i)``, so a clip
gets the same styles and permutations whatever batch, process or worker it is in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from stbias.errors import StbiasError


def clip_generator(seed: int, index: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, index)`` (well mixed, stable across runs)."""
    if int(index) < 0 or int(seed) < 0:
        raise StbiasError(f"seed and clip index must be >= 0; got seed={seed}, index={index}")
    state = np.random.SeedSequence((int(seed), int(index))).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def draw_styles(num_styles: int, generator: torch.Generator) -> tuple[int, int]:
    """Two different style indices ``a != b``, uniform over ordered pairs."""
    if num_styles < 2:
        raise StbiasError(f"dynamic pairs need at least 2 styles; the stylizer has {num_styles}")
    a = int(torch.randint(num_styles, (1,), generator=generator))
    b = int(torch.randint(num_styles - 1, (1,), generator=generator))
    return a, b + (b >= a)


def clip_indices(index: int | Sequence[int] | torch.Tensor, batch: int) -> list[int]:
    """The dataset index of each clip of a batch: ``index`` for each, or the first one's."""
    if isinstance(index, torch.Tensor):
        index = index.tolist()
    if isinstance(index, int):
        return [index + i for i in range(batch)]
    index = [int(i) for i in index]
    if len(index) != batch:
        raise StbiasError(f"got {len(index)} clip indices for a batch of {batch} clips")
    return index
