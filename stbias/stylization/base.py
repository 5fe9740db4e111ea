"""What every stylizer shares: style bookkeeping and input checks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

from stbias.data.clips import check_float_clip
from stbias.errors import StbiasError

StyleRef = int | str


class Stylizer(ABC):
    """Renders a batch of clips in chosen styles, the same transform for every frame of a clip.

    Subclasses set ``self.styles`` (a tuple of style names) and implement ``_stylize``.
    Calling ``stylizer(clip01, styles)`` takes float ``(B, C, T, H, W)`` in [0, 1] (C = 1 or 3)
    and one style per clip (an index into ``styles`` or a name; one value means every clip) and
    returns the same shape and range on the input's device.
    """

    name: str = "stylizer"
    styles: tuple[str, ...] = ()

    @property
    def num_styles(self) -> int:
        """How many styles pair sampling can draw from."""
        return len(self.styles)

    def style_index(self, style: StyleRef) -> int:
        """The position of ``style`` (an index or a name) in ``self.styles``."""
        if isinstance(style, str):
            if style not in self.styles:
                raise StbiasError(
                    f"unknown style {style!r} for {self.name}; styles: {', '.join(self.styles)}"
                )
            return self.styles.index(style)
        index = int(style)
        if not 0 <= index < len(self.styles):
            raise StbiasError(
                f"style index {index} out of range for {self.name}; "
                f"valid: 0..{len(self.styles) - 1}"
            )
        return index

    def __call__(
        self,
        clip01: torch.Tensor,
        styles: StyleRef | Sequence[StyleRef] | torch.Tensor,
        **context,
    ) -> torch.Tensor:
        """Stylize ``clip01`` ``(B, C, T, H, W)``; ``context`` holds ``ids``, ``frame_indices``."""
        check_clip(clip01)
        batch = clip01.shape[0]
        if isinstance(styles, torch.Tensor):
            styles = styles.tolist()
        if isinstance(styles, (int, str)):
            styles = [styles] * batch
        if len(styles) != batch:
            raise StbiasError(f"got {len(styles)} styles for a batch of {batch} clips")
        out = self._stylize(clip01, [self.style_index(s) for s in styles], **context)
        return out.clamp_(0.0, 1.0)

    @abstractmethod
    def _stylize(self, clip01: torch.Tensor, styles: list[int], **context) -> torch.Tensor:
        """Render clip ``b`` of ``clip01`` in style ``styles[b]`` (an index into ``styles``)."""


def check_clip(clip01: torch.Tensor) -> None:
    """Raise a StbiasError unless ``clip01`` is a float ``(B, C, T, H, W)`` tensor, C in {1, 3}."""
    check_float_clip(clip01, "a stylizer")
