"""Styles rendered beforehand, read from the authors' layout ``<root>/<style>/<video>/<frame>``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from stbias.errors import StbiasError
from stbias.stylization.base import Stylizer

RESIZE_MODES = ("resize", "center_crop")


class PrecomputedStylizer(Stylizer):
    """Reads the frames of each clip from folders of stylized frames, one folder per style.

    Needs to know which frames the clip holds: call it with ``sources`` (or ``ids``; one video per
    clip, the folder name under each style) and ``frame_indices`` (``(B, T)`` 0-based frame
    numbers of the source video) or, with ``fps``, ``frame_times`` (``(B, T)`` seconds). The
    frames are read with OpenCV and brought to the clip's ``H, W``.

    The authors' releases: stylized ActivityNet is ``style_<k>/v_<id>/<%06d>.jpg`` at 5 frames per
    second numbered from 1 (``stylization=precomputed_activitynet``); stylized DAVIS is
    ``JPEGImages/<style name>/<sequence>/<frame>.jpg`` with the source's frame names
    (``stylization=precomputed_davis``).

    Args:
        root: folder holding one sub-folder per style.
        styles: the style folder names; by default every sub-folder of ``root`` whose name
            starts with ``style``, sorted.
        frame_pattern: file name of frame ``i`` as a format string with fields ``index``
            (``i + first_index``) and ``video``, e.g. ``"{index:05d}.jpg"``; ``None`` lists the
            video folder and takes the ``i``-th image file in sorted order.
        first_index: the number of the first frame in ``frame_pattern`` (0 or 1).
        resize: ``"resize"`` stretches each frame to ``H, W``; ``"center_crop"`` scales its
            shorter side and crops the centre, as datasets that centre-crop do.
        fps: frame rate of the stylized copies when it differs from the source's: frame ``i``
            of a copy is the one shown at ``floor(time * fps)`` (needs ``frame_times``).
    """

    name = "precomputed"

    def __init__(
        self,
        root: str | None,
        styles: Sequence[str] | None = None,
        frame_pattern: str | None = None,
        first_index: int = 0,
        resize: str = "resize",
        fps: float | None = None,
    ):
        if not root:
            raise StbiasError(
                "precomputed stylization needs the folder of stylized frames: set "
                "stylization.stylizer.root=<dir holding style_1/, style_2/, ...>"
            )
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise StbiasError(f"stylized frame root {str(self.root)!r} is not a directory")
        if styles is None:
            styles = sorted(p.name for p in self.root.iterdir() if p.is_dir())
            styles = [s for s in styles if s.startswith("style")]
        if fps is not None and float(fps) <= 0:
            raise StbiasError(f"stylization.stylizer.fps must be positive or null, got {fps}")
        self.fps = None if fps is None else float(fps)
        styles = [str(s) for s in styles]
        missing = [s for s in styles if not (self.root / s).is_dir()]
        if not styles or missing:
            found = sorted(p.name for p in self.root.iterdir() if p.is_dir())
            raise StbiasError(
                f"style folder(s) {missing or '(none)'} not found under {str(self.root)!r}; "
                f"found: {', '.join(found) or 'no folders'}"
            )
        if resize not in RESIZE_MODES:
            raise StbiasError(f"unknown resize mode {resize!r}; valid: {', '.join(RESIZE_MODES)}")
        self.styles = tuple(styles)
        self.frame_pattern = frame_pattern
        self.first_index = int(first_index)
        self.resize = resize
        self._listings: dict[Path, list[Path]] = {}

    def frame_path(self, style: int, video: str, frame: int) -> Path:
        """The file of 0-based frame ``frame`` of ``video`` in style ``style``."""
        folder = self.root / self.styles[style] / str(video)
        if self.frame_pattern is not None:
            name = self.frame_pattern.format(index=int(frame) + self.first_index, video=video)
            return folder / name
        if folder not in self._listings:
            if not folder.is_dir():
                raise StbiasError(f"no stylized frames for video {video!r}: {str(folder)!r}")
            suffixes = {".jpg", ".jpeg", ".png", ".bmp"}
            files = [p for p in folder.iterdir() if p.suffix.lower() in suffixes]
            self._listings[folder] = sorted(files)
        files = self._listings[folder]
        if not 0 <= frame < len(files):
            raise StbiasError(
                f"frame {frame} of video {video!r} is out of range; {str(folder)!r} holds "
                f"{len(files)} frames"
            )
        return files[frame]

    def _read(self, path: Path, height: int, width: int, channels: int) -> np.ndarray:
        import cv2

        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise StbiasError(f"cannot read stylized frame {str(path)!r}")
        image = image[:, :, ::-1]
        if self.resize == "center_crop":
            scale = max(height / image.shape[0], width / image.shape[1])
            size = (
                max(width, round(image.shape[1] * scale)),
                max(height, round(image.shape[0] * scale)),
            )
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            y0, x0 = (image.shape[0] - height) // 2, (image.shape[1] - width) // 2
            image = image[y0 : y0 + height, x0 : x0 + width]
        elif image.shape[:2] != (height, width):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        image = image.astype(np.float32) / 255.0
        if channels == 1:
            image = image @ np.array([[0.299], [0.587], [0.114]], dtype=np.float32)
        return image

    def _stylize(self, clip01: torch.Tensor, styles: list[int], **context) -> torch.Tensor:
        b, c, t, h, w = clip01.shape
        videos = context.get("sources") or context.get("ids")
        if self.fps is None:
            frames, what = context.get("frame_indices"), "frame indices (frame_indices=(B, T))"
        else:
            frames, what = context.get("frame_times"), "frame times (frame_times=(B, T))"
        if videos is None or frames is None:
            raise StbiasError(
                f"precomputed stylization needs the clips' videos and {what}; the dataset's "
                "samples must provide them (the video readers of stbias.data do)"
            )
        frames = torch.as_tensor(frames).reshape(b, -1)
        if self.fps is not None:
            # the copy's frame shown at each time (5 fps copies of 30 fps videos: every 6th)
            frames = torch.floor(frames.double() * self.fps + 1e-6).long()
        if len(videos) != b or frames.shape[1] != t:
            raise StbiasError(
                f"got {len(videos)} videos and frame numbers {tuple(frames.shape)} for clips of "
                f"shape {tuple(clip01.shape)}"
            )
        out = np.empty((b, t, h, w, c), dtype=np.float32)
        for i in range(b):
            for j in range(t):
                path = self.frame_path(styles[i], videos[i], int(frames[i, j]))
                if not path.is_file():
                    raise StbiasError(f"stylized frame {str(path)!r} does not exist")
                out[i, j] = self._read(path, h, w, c)
        return torch.from_numpy(out).permute(0, 4, 1, 2, 3).to(clip01.device, clip01.dtype)
