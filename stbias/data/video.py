"""A clip dataset over a list of videos (files decoded by decord or PyAV, or folders of frames)."""

from __future__ import annotations

import glob
import logging
import os
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from stbias.data.clips import (
    CROP_MODES,
    TEMPORAL_MODES,
    check_mode,
    crop_box,
    resize_short_side,
    temporal_indices,
)
from stbias.data.readers import DecodeError, open_video, resolve_backend
from stbias.errors import StbiasError

log = logging.getLogger(__name__)

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass
class VideoRecord:
    """One sample's source: a video file or a folder of frames, with its label.

    ``start``/``end`` restrict the clip to frames ``[start, end)``; ``start_sec``/``end_sec`` do
    the same in seconds (converted with the file's frame rate, or ``fps`` for frame folders).
    ``extra`` entries are copied into the sample (e.g. ``style``); ``mask_dir`` names a folder of
    per-frame masks read alongside the frames (DAVIS): PNGs (foreground = any non-zero value) or,
    with ``mask_format="voc_xml"``, PASCAL-VOC XML files whose boxes are filled (ImageNet VID).
    With ``sparse_masks`` a frame without a mask file is "not annotated" (255 in ``mask``);
    otherwise masks are matched to frames by name, else by sorted position. ``flow_dir`` names a
    folder of flow images (flow from frame ``t`` to ``t + 1`` saved under frame ``t``'s name).
    """

    path: str
    label: int
    id: str
    start: int | None = None
    end: int | None = None
    start_sec: float | None = None
    end_sec: float | None = None
    fps: float | None = None
    mask_dir: str | None = None
    mask_format: str = "png"
    sparse_masks: bool = False
    flow_dir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


NOT_ANNOTATED = 255  # mask value of pixels (frames) without ground truth
MASK_FORMATS = {"png": ".png", "voc_xml": ".xml"}


def list_frames(folder: str, pattern: str | None = None) -> list[str]:
    """Sorted image files of a frame folder (``pattern`` is a glob such as ``*.jpg``)."""
    if pattern:
        files = glob.glob(os.path.join(glob.escape(folder), pattern))
    else:
        files = [
            os.path.join(folder, f)
            for f in os.listdir(folder)
            if f.lower().endswith(FRAME_EXTENSIONS)
        ]
    return sorted(files)


def _read_image(path: str, grey: bool = False) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR)
    if image is None:
        raise DecodeError(f"cannot read image {path}")
    return image if grey else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class _Source:
    """Random access to the frames of one record."""

    def __init__(
        self, record: VideoRecord, pattern: str | None, backend: str = "auto", threads: int = 1
    ):
        self.record = record
        if not os.path.exists(record.path):
            raise DecodeError(f"missing {record.path}")
        self.is_dir = os.path.isdir(record.path)
        if self.is_dir:
            self.files = list_frames(record.path, pattern)
            self.n = len(self.files)
            self.fps = record.fps or 30.0
        else:
            self.reader = open_video(record.path, backend, threads)
            self.n = len(self.reader)
            self.fps = self.reader.fps
        if self.n == 0:
            raise DecodeError(f"no frames in {record.path}")

    def frame_range(self) -> tuple[int, int]:
        """The record's ``[start, end)`` clipped to the frames that exist."""
        r = self.record
        start, end = 0, self.n
        if r.start_sec is not None:
            start = int(np.floor(r.start_sec * self.fps))
        if r.end_sec is not None:
            end = int(np.ceil(r.end_sec * self.fps))
        if r.start is not None:
            start = r.start
        if r.end is not None:
            end = r.end
        start = min(max(start, 0), self.n - 1)
        end = min(max(end, start + 1), self.n)
        return start, end

    def read(self, indices: np.ndarray) -> np.ndarray:
        """Frames ``(T, H, W, 3)`` uint8 at absolute ``indices``."""
        if self.is_dir:
            frames = [_read_image(self.files[i]) for i in indices]
            shapes = {f.shape for f in frames}
            if len(shapes) > 1:
                # frames of one folder in several sizes: bring them to the first frame's
                h, w = frames[0].shape[:2]
                log.warning(
                    "frames of %s differ in size (%s); resizing them to %dx%d",
                    self.record.path,
                    ", ".join(f"{s[1]}x{s[0]}" for s in sorted(shapes)),
                    w,
                    h,
                )
                frames = [
                    f
                    if f.shape[:2] == (h, w)
                    else cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA)
                    for f in frames
                ]
            return np.stack(frames)
        unique, inverse = np.unique(indices, return_inverse=True)
        frames = self.reader.read(unique)
        if frames.shape[0] != len(unique):
            raise DecodeError(f"cannot decode {self.record.path}: short read")
        return frames[inverse]


class VideoClipDataset(Dataset):
    """Clips from a list of :class:`VideoRecord` (see :mod:`stbias.data` for the sample layout).

    Args:
        records: the videos, in dataset order.
        num_frames: frames per clip ``T``.
        sampling_rate: step between frames (ignored by ``temporal="uniform"``).
        size: output side (square crop); ``None`` keeps the decoded frames as they are.
        short_side: resize the shorter side to this before cropping (default ``size``).
        temporal: ``uniform``, ``random`` or ``centre`` frame selection.
        crop: ``centre`` or ``random`` spatial crop.
        num_views: clips per video (test-time multi-view); the dataset then has
            ``len(records) * num_views`` samples and each sample carries its ``view``.
        seed: seed of the random choices; a sample depends only on (seed, epoch, index).
        frame_pattern: glob of frame files inside frame folders (default: any image).
        classes: class names, index = label (informational).
        max_retries: how many following videos to try when one cannot be read.
        backend: video file reader, ``auto`` (decord where installed, else PyAV), ``decord`` or
            ``pyav`` (see :mod:`stbias.data.readers`).
        decode_threads: decoder threads per video read (``0``: the decoder's choice).
    """

    def __init__(
        self,
        records: list[VideoRecord],
        *,
        num_frames: int = 16,
        sampling_rate: int = 1,
        size: int | None = 112,
        short_side: int | None = None,
        temporal: str = "centre",
        crop: str = "centre",
        num_views: int = 1,
        seed: int = 0,
        frame_pattern: str | None = None,
        classes: list[str] | None = None,
        max_retries: int = 50,
        skipped: list[str] | None = None,
        backend: str = "auto",
        decode_threads: int = 1,
    ):
        self.records = list(records)
        self.num_frames = int(num_frames)
        self.sampling_rate = int(sampling_rate)
        self.size = None if size is None else int(size)
        self.short_side = self.size if short_side is None else int(short_side)
        if self.size is not None and self.short_side < self.size:
            raise StbiasError(f"short_side {self.short_side} is smaller than size {self.size}")
        self.temporal = check_mode(temporal, TEMPORAL_MODES, "temporal sampling")
        self.crop = check_mode(crop, CROP_MODES, "crop")
        if num_views < 1:
            raise StbiasError(f"num_views must be >= 1, got {num_views}")
        self.num_views = int(num_views)
        self.seed = int(seed)
        self.epoch = 0
        self.frame_pattern = frame_pattern
        self.classes = list(classes) if classes is not None else None
        self.max_retries = int(max_retries)
        self.backend = resolve_backend(backend)
        if int(decode_threads) < 0:
            raise StbiasError(f"decode_threads must be >= 0, got {decode_threads}")
        self.decode_threads = int(decode_threads)
        # what could not be read, as "path: reason"; filled at construction (missing files) and
        # by __getitem__ in this process (worker processes keep their own copy, hence "skipped")
        self.skipped: list[str] = list(skipped or [])
        for reason in self.skipped:
            log.warning("skipping %s", reason)
        if not self.records:
            raise StbiasError("no readable videos: " + "; ".join(self.skipped[:5]))

    @property
    def num_skipped(self) -> int:
        """Number of distinct videos skipped so far in this process."""
        return len(self.skipped)

    def set_epoch(self, epoch: int) -> None:
        """Change the random clip and crop choices (call once per training epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records) * self.num_views

    def clip_info(self, index: int) -> dict[str, Any]:
        """``{"id", "label"}`` of sample ``index``, from the annotations (nothing is decoded)."""
        record = self.records[int(index) // self.num_views]
        return {"id": record.id, "label": int(record.label)}

    def _skip(self, record: VideoRecord, exc: Exception) -> None:
        reason = f"{record.path}: {exc}"
        if reason not in self.skipped:
            self.skipped.append(reason)
            log.warning("skipping unreadable video %s", reason)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """The sample at ``index``; an unreadable video is replaced by the next readable one.

        ``sample["skipped"]`` is 1 when the video at ``index`` itself could not be read (the
        sample then comes from a following video), else 0: summing it over one pass counts the
        unreadable videos exactly, also across DataLoader worker processes.
        """
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        vid, view = divmod(index, self.num_views)
        n = len(self.records)
        for attempt in range(min(self.max_retries, n)):
            record = self.records[(vid + attempt) % n]
            try:
                sample = self.load(record, index, view)
            except DecodeError as exc:
                self._skip(record, exc)
                continue
            sample["skipped"] = int(attempt > 0)
            return sample
        raise StbiasError(
            f"{self.max_retries} videos in a row from index {index} could not be read; "
            f"last: {self.skipped[-1] if self.skipped else '?'}"
        )

    def load(self, record: VideoRecord, index: int, view: int = 0) -> dict[str, Any]:
        """Read, sample and crop one clip of ``record`` (raises :class:`DecodeError`)."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        source = _Source(record, self.frame_pattern, self.backend, self.decode_threads)
        start, end = source.frame_range()
        local = temporal_indices(
            end - start,
            self.num_frames,
            self.sampling_rate,
            self.temporal,
            rng,
            view,
            self.num_views,
        )
        indices = start + local
        frames = source.read(indices)
        mask = flow = None
        if record.mask_dir is not None:
            mask = self._read_masks(record, source, indices, frames.shape[1:3])
        if record.flow_dir is not None:
            flow = self._read_flow(record, source, indices[:-1], frames.shape[1:3])
        if self.size is not None:
            frames = resize_short_side(frames, self.short_side)
            if mask is not None:
                mask = resize_short_side(mask, self.short_side, cv2.INTER_NEAREST)
            if flow is not None:
                flow = resize_short_side(flow, self.short_side)
            y, x = crop_box(frames.shape[1], frames.shape[2], self.size, self.crop, rng)
            frames = frames[:, y : y + self.size, x : x + self.size]
            if mask is not None:
                mask = mask[:, y : y + self.size, x : x + self.size]
            if flow is not None:
                flow = flow[:, y : y + self.size, x : x + self.size]
        sample: dict[str, Any] = {
            "video": torch.from_numpy(np.ascontiguousarray(frames)),
            "label": int(record.label),
            "id": record.id,
            "index": int(index),
            "view": int(view),
            "frame_indices": torch.from_numpy(indices.astype(np.int64)),
            # the source's own name (file stem or frame folder) and the frames' times in seconds:
            # what precomputed stylized copies of the source are found by
            "source": os.path.splitext(os.path.basename(os.path.normpath(record.path)))[0],
            "frame_times": torch.from_numpy(indices.astype(np.float64) / source.fps),
        }
        if mask is not None:
            sample["mask"] = torch.from_numpy(np.ascontiguousarray(mask))
        if flow is not None:
            sample["flow"] = torch.from_numpy(np.ascontiguousarray(flow))
        sample.update(record.extra)
        return sample

    def _read_masks(
        self, record: VideoRecord, source: _Source, indices: np.ndarray, shape: tuple[int, int]
    ) -> np.ndarray:
        if not source.is_dir:
            raise DecodeError(f"masks need frame folders; {record.path} is a video file")
        ext = MASK_FORMATS[record.mask_format]
        masks = list_frames(record.mask_dir, "*" + ext)
        if not masks and not record.sparse_masks:
            raise DecodeError(f"no masks in {record.mask_dir}")
        out = []
        for i in indices:
            frame_name = os.path.splitext(os.path.basename(source.files[i]))[0]
            path = os.path.join(record.mask_dir, frame_name + ext)
            if not os.path.exists(path):
                if record.sparse_masks:
                    out.append(np.full(shape, NOT_ANNOTATED, dtype=np.uint8))
                    continue
                # masks are matched to frames by name; other names are matched by sorted position
                path = masks[min(i, len(masks) - 1)]
            mask = read_mask(path, record.mask_format)
            if mask.shape != tuple(shape):
                raise DecodeError(f"mask {path} is {mask.shape[::-1]}, its frame {shape[::-1]}")
            out.append(mask)
        return np.stack(out)

    def _read_flow(
        self, record: VideoRecord, source: _Source, indices: np.ndarray, shape: tuple[int, int]
    ) -> np.ndarray:
        if not source.is_dir:
            raise DecodeError(f"flow images need frame folders; {record.path} is a video file")
        out = []
        for i in indices:
            stem = os.path.splitext(os.path.basename(source.files[i]))[0]
            found = [
                os.path.join(record.flow_dir, stem + ext)
                for ext in FRAME_EXTENSIONS
                if os.path.exists(os.path.join(record.flow_dir, stem + ext))
            ]
            if not found:
                raise DecodeError(f"no flow image for frame {stem} in {record.flow_dir}")
            image = _read_image(found[0])
            if image.shape[:2] != tuple(shape):
                image = cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
            out.append(image)
        return np.stack(out)

    def iter_masks(self) -> Iterator[np.ndarray]:
        """Every ground-truth mask file of every video, ``(H, W)`` uint8 0/1, at its own size.

        Frames without a mask file are not visited (they have no ground truth); unreadable files
        are skipped with a warning and listed in ``skipped``.
        """
        for record in self.records:
            if record.mask_dir is None:
                continue
            ext = MASK_FORMATS[record.mask_format]
            for path in list_frames(record.mask_dir, "*" + ext):
                try:
                    yield read_mask(path, record.mask_format)
                except DecodeError as exc:
                    self._skip(record, exc)


def read_mask(path: str, mask_format: str = "png") -> np.ndarray:
    """A foreground mask ``(H, W)`` uint8 0/1 from a PNG (any non-zero value, e.g. instance ids)
    or a PASCAL-VOC XML file (the union of its object boxes, at the annotated image size)."""
    if mask_format == "png":
        return (_read_image(path, grey=True) > 0).astype(np.uint8)
    if mask_format != "voc_xml":
        raise StbiasError(f"unknown mask format {mask_format!r}; valid: {', '.join(MASK_FORMATS)}")
    try:
        root = ElementTree.parse(path).getroot()
        height = int(root.findtext("size/height"))
        width = int(root.findtext("size/width"))
        mask = np.zeros((height, width), dtype=np.uint8)
        for box in root.iter("bndbox"):
            x0, y0, x1, y1 = (int(float(box.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax"))
            mask[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1] = 1
    except (ElementTree.ParseError, TypeError, ValueError, OSError) as exc:
        raise DecodeError(f"cannot read box annotations {path}: {exc}") from exc
    return mask
