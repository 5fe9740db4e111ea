"""MoCA (Moving Camouflaged Animals, Lamdouar et al. ACCV'20) in the layouts it is released in.

Two releases, one reader (``dataset=moca``):

* **MoCA** — frames ``<root>/JPEGImages/<video>/<frame>.jpg`` and one CSV of regions exported by
  the VGG Image Annotator (VIA 3): ``annotations_modified.csv`` (the authors' corrected boxes) or
  ``annotations.csv``, in ``<root>/Annotations/`` or ``<root>/``. Comment lines start with ``#``
  (one of them may be ``# CSV_HEADER = metadata_id,file_list,...``); each row names one frame in
  ``file_list`` (``/<video>/<frame>.jpg``, possibly as a JSON list) and one region in
  ``spatial_coordinates``, a JSON list whose first number is VIA's shape id: ``[2, x, y, w, h]``
  a rectangle, ``[3, cx, cy, r]`` a circle, ``[4, cx, cy, rx, ry]`` an ellipse, ``[7, x1, y1,
  x2, y2, ...]`` a polygon. Each region is filled into the frame's mask, so the masks are **box
  masks**: the region similarity J measured on them is a box-IoU J, not the pixel J of DAVIS.
  MoCA has no train/test split: every video is read whatever ``split`` says.
* **MoCA-Mask** (Cheng et al. CVPR'22) — pixel masks ``<root>/<split>/<video>/GT/*.png`` beside
  the frames ``<root>/<split>/<video>/Imgs/*.jpg``, the split folders ``TrainDataset_per_sq``
  and ``TestDataset_per_sq`` (``split=train`` / ``test``; also under ``<root>/MoCA_Video/``).

``annotations=auto`` reads MoCA-Mask's pixel masks where the split folder exists, else the
boxes; ``masks`` or ``boxes`` insist on one. Both releases annotate a subset of the frames
(MoCA-Mask every fifth): with ``clips=annotated`` (the default) every annotated frame gives one
sample, a clip starting at it, so each clip's first frame has ground truth; ``clips=video``
gives one sample per video (frames without annotation are "not annotated", 255, and J skips
them). ``label`` is the video's position in the sorted list: samples of one video are one
sequence.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np

from stbias.data.video import (
    NOT_ANNOTATED,
    DecodeError,
    VideoClipDataset,
    VideoRecord,
    list_frames,
)
from stbias.errors import StbiasError

ANNOTATION_FILES = ("annotations_modified.csv", "annotations.csv")
MASK_SPLITS = {"train": "TrainDataset_per_sq", "test": "TestDataset_per_sq"}
SPLIT_ALIASES = {"val": "test", "valid": "test", "validation": "test"}
ANNOTATION_MODES = ("auto", "masks", "boxes")
CLIP_MODES = ("annotated", "video")
CSV_COLUMNS = (
    "metadata_id",
    "file_list",
    "flags",
    "temporal_coordinates",
    "spatial_coordinates",
    "metadata",
)
# VIA 3 shape ids
RECTANGLE, CIRCLE, ELLIPSE, POLYGON = 2, 3, 4, 7
LAYOUT = (
    "<root>/JPEGImages/<video>/*.jpg with <root>/[Annotations/]annotations_modified.csv (or "
    "annotations.csv), or MoCA-Mask's <root>/[MoCA_Video/]{TrainDataset_per_sq,"
    "TestDataset_per_sq}/<video>/{Imgs/*.jpg,GT/*.png}"
)

Region = tuple[int, list[float]]


def parse_regions(path: str) -> dict[str, dict[str, list[Region]]]:
    """``{video: {frame stem: [(shape id, coordinates), ...]}}`` from a VIA 3 CSV export.

    Raises:
        StbiasError: a row without ``file_list`` / ``spatial_coordinates``, or a region whose
            coordinates are not a JSON list of numbers, naming the file and line.
    """
    columns: list[str] = list(CSV_COLUMNS)
    regions: dict[str, dict[str, list[Region]]] = {}
    with open(path, newline="") as fh:
        for number, row in enumerate(csv.reader(fh), start=1):
            if not row or not "".join(row).strip():
                continue
            first = row[0].strip()
            if first.startswith("#"):
                if "CSV_HEADER" in first:
                    head = ",".join(row).split("=", 1)[-1]
                    columns = [c.strip() for c in head.split(",")]
                continue
            if "file_list" in row:
                columns = [c.strip() for c in row]
                continue
            entry = dict(zip(columns, row, strict=False))
            if "file_list" not in entry or "spatial_coordinates" not in entry:
                raise StbiasError(
                    f"moca: {path} line {number} has no file_list / spatial_coordinates column"
                )
            name = entry["file_list"].strip().strip("[]").strip().strip("\"'")
            parts = [p for p in name.replace("\\", "/").split("/") if p]
            if len(parts) < 2:
                raise StbiasError(
                    f"moca: {path} line {number}: file_list {name!r} is not /<video>/<frame>.jpg"
                )
            coords = entry["spatial_coordinates"].strip()
            if not coords or coords == "[]":  # a frame-level row (e.g. motion metadata)
                continue
            try:
                values = [float(v) for v in json.loads(coords)]
            except (ValueError, TypeError):
                raise StbiasError(
                    f"moca: {path} line {number}: spatial_coordinates {coords!r} is not a JSON "
                    "list of numbers such as [2, x, y, w, h]"
                ) from None
            if not values or not _drawable(int(values[0]), values[1:]):
                raise StbiasError(
                    f"moca: {path} line {number}: region {coords} is not a rectangle "
                    f"[2, x, y, w, h], circle [3, cx, cy, r], ellipse [4, cx, cy, rx, ry] or "
                    "polygon [7, x1, y1, ...]"
                )
            video, stem = parts[-2], os.path.splitext(parts[-1])[0]
            regions.setdefault(video, {}).setdefault(stem, []).append((int(values[0]), values[1:]))
    return regions


def _drawable(shape_id: int, c: list[float]) -> bool:
    if shape_id == POLYGON:
        return len(c) >= 6 and len(c) % 2 == 0
    return len(c) == {RECTANGLE: 4, CIRCLE: 3, ELLIPSE: 4}.get(shape_id, -1)


def region_mask(regions: list[Region], shape: tuple[int, int]) -> np.ndarray:
    """The union of ``regions`` filled into an ``(H, W)`` uint8 0/1 mask.

    Rectangles cover pixels ``[x, x + w) x [y, y + h)`` (rounded); circles and ellipses are
    filled about their centre; polygons through their vertices.
    """
    mask = np.zeros(shape, dtype=np.uint8)
    for shape_id, c in regions:
        if not _drawable(shape_id, c):
            raise StbiasError(f"VIA region [{shape_id}, ...] with {len(c)} numbers cannot be drawn")
        if shape_id == RECTANGLE:
            x0, y0 = int(round(c[0])), int(round(c[1]))
            x1, y1 = int(round(c[0] + c[2])), int(round(c[1] + c[3]))
            mask[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = 1
        elif shape_id in (CIRCLE, ELLIPSE):
            centre = (int(round(c[0])), int(round(c[1])))
            axes = (int(round(c[2])), int(round(c[2 if shape_id == CIRCLE else 3])))
            cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, thickness=-1)
        else:
            points = np.round(np.array(c).reshape(-1, 2)).astype(np.int32)
            cv2.fillPoly(mask, [points], 1)
    return mask


class MocaBoxes(VideoClipDataset):
    """MoCA's frames with masks drawn from the VIA regions (see the module docstring).

    ``regions`` maps each record's ``id`` (the video) to ``{frame stem: regions}``; a frame
    without regions is "not annotated" (255).
    """

    def __init__(
        self, records: list[VideoRecord], regions: dict[str, dict[str, list[Region]]], **clip: Any
    ):
        super().__init__(records, **clip)
        self.regions = regions

    def _read_masks(self, record, source, indices, shape) -> np.ndarray:
        frames = self.regions.get(record.id, {})
        out = []
        for i in indices:
            stem = os.path.splitext(os.path.basename(source.files[i]))[0]
            found = frames.get(stem)
            if found is None:
                out.append(np.full(shape, NOT_ANNOTATED, dtype=np.uint8))
            else:
                out.append(region_mask(found, tuple(shape)))
        return np.stack(out)

    def iter_masks(self) -> Iterator[np.ndarray]:
        """Every annotated frame's box mask, at its frame's own size."""
        for video in dict.fromkeys(r.id for r in self.records):
            record = next(r for r in self.records if r.id == video)
            for frame in list_frames(record.path, self.frame_pattern):
                stem = os.path.splitext(os.path.basename(frame))[0]
                if stem in self.regions.get(video, {}):
                    image = cv2.imread(frame, cv2.IMREAD_GRAYSCALE)
                    if image is None:
                        self._skip(record, DecodeError(f"cannot read image {frame}"))
                        continue
                    yield region_mask(self.regions[video][stem], image.shape[:2])


def _root(root: str | None) -> str:
    if root is None or str(root) == "":
        raise StbiasError(f"moca: dataset.root is not set; expected layout: {LAYOUT}")
    path = os.path.expanduser(str(root))
    if not os.path.isdir(path):
        raise StbiasError(f"moca: root {path!r} not found; expected layout: {LAYOUT}")
    return path


def _mask_split(root: str, split: str) -> str | None:
    folder = MASK_SPLITS.get(SPLIT_ALIASES.get(split, split))
    if folder is None:
        return None
    for base in (root, os.path.join(root, "MoCA_Video")):
        if os.path.isdir(os.path.join(base, folder)):
            return os.path.join(base, folder)
    return None


def _anchored(
    folder: str, label: int, video: str, annotated: list[str], span: int, **masks: Any
) -> list[VideoRecord]:
    """One record per annotated frame of ``folder``: a clip of ``span`` frames starting at it."""
    frames = [os.path.splitext(os.path.basename(f))[0] for f in list_frames(folder, "*.jpg")]
    position = {stem: i for i, stem in enumerate(frames)}
    starts = sorted(position[s] for s in annotated if s in position)
    return [
        VideoRecord(folder, label, video, start=i, end=i + span, **masks)
        for i in dict.fromkeys(min(s, max(len(frames) - span, 0)) for s in starts)
    ]


def moca(
    root: str | None,
    split: str = "test",
    annotations: str = "auto",
    annotation_file: str | None = None,
    clips: str = "annotated",
    **clip: Any,
) -> VideoClipDataset:
    """MoCA frames with pixel masks (MoCA-Mask) or box masks (MoCA), see the module docstring.

    Args:
        split: MoCA-Mask's ``train`` or ``test`` (``val`` = ``test``); MoCA's boxes have none.
        annotations: ``auto``, ``masks`` (MoCA-Mask) or ``boxes`` (the VIA CSV).
        annotation_file: the CSV of boxes (relative to ``root`` unless absolute); default the
            first of ``annotations_modified.csv``, ``annotations.csv`` in ``root/Annotations``
            or ``root``.
        clips: ``annotated`` (one sample per annotated frame) or ``video`` (one per video).
    """
    root = _root(root)
    if annotations not in ANNOTATION_MODES:
        raise StbiasError(
            f"moca: annotations={annotations!r}; valid: {', '.join(ANNOTATION_MODES)}"
        )
    if clips not in CLIP_MODES:
        raise StbiasError(f"moca: clips={clips!r}; valid: {', '.join(CLIP_MODES)}")
    span = (int(clip.get("num_frames", 16)) - 1) * int(clip.get("sampling_rate", 1)) + 1
    clip.setdefault("frame_pattern", "*.jpg")
    split_dir = _mask_split(root, str(split))
    if annotations == "masks" or (annotations == "auto" and split_dir is not None):
        if split_dir is None:
            raise StbiasError(
                f"moca: annotations=masks but no MoCA-Mask split folder for split={split!r} "
                f"under {root!r}; expected layout: {LAYOUT}"
            )
        return _mask_dataset(split_dir, clips, span, clip)
    return _box_dataset(root, annotation_file, clips, span, clip)


def _mask_dataset(split_dir: str, clips: str, span: int, clip: dict[str, Any]) -> VideoClipDataset:
    videos = sorted(
        v for v in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, v, "Imgs"))
    )
    if not videos:
        raise StbiasError(f"moca: no <video>/Imgs folders in {split_dir!r}; expected: {LAYOUT}")
    records = []
    for label, video in enumerate(videos):
        frames, gt = (os.path.join(split_dir, video, sub) for sub in ("Imgs", "GT"))
        masks = {"mask_dir": gt, "sparse_masks": True}
        if clips == "video":
            records.append(VideoRecord(frames, label, video, **masks))
            continue
        annotated = [os.path.splitext(os.path.basename(p))[0] for p in list_frames(gt, "*.png")]
        records += _anchored(frames, label, video, annotated, span, **masks)
    if not records:
        raise StbiasError(f"moca: no GT/*.png mask matches a frame under {split_dir!r}")
    dataset = VideoClipDataset(records, classes=videos, **clip)
    dataset.annotations = []
    return dataset


def _annotation_file(root: str, annotation_file: str | None) -> str:
    if annotation_file:
        path = os.path.expanduser(str(annotation_file))
        path = path if os.path.isabs(path) else os.path.join(root, path)
        if not os.path.isfile(path):
            raise StbiasError(f"moca: annotation_file {path!r} not found")
        return path
    candidates = [
        os.path.join(root, sub, name) for name in ANNOTATION_FILES for sub in ("Annotations", "")
    ]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise StbiasError(
        f"moca: none of {', '.join(repr(c) for c in candidates)} found; expected layout: {LAYOUT}"
    )


def _box_dataset(
    root: str, annotation_file: str | None, clips: str, span: int, clip: dict[str, Any]
) -> VideoClipDataset:
    csv_path = _annotation_file(root, annotation_file)
    frames_root = os.path.join(root, "JPEGImages")
    if not os.path.isdir(frames_root):
        raise StbiasError(f"moca: {frames_root!r} not found; expected layout: {LAYOUT}")
    regions = parse_regions(csv_path)
    videos = sorted(v for v in regions if os.path.isdir(os.path.join(frames_root, v)))
    if not videos:
        raise StbiasError(
            f"moca: none of the {len(regions)} videos of {csv_path} has a folder in {frames_root}"
        )
    records = []
    for label, video in enumerate(videos):
        folder = os.path.join(frames_root, video)
        masks = {"mask_dir": csv_path, "mask_format": "via_csv"}
        if clips == "video":
            records.append(VideoRecord(folder, label, video, **masks))
        else:
            records += _anchored(folder, label, video, list(regions[video]), span, **masks)
    dataset = MocaBoxes(records, regions, classes=videos, **clip)
    dataset.annotations = [os.path.abspath(csv_path)]
    return dataset
