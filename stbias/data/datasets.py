"""Readers for real video datasets in the layouts they are released in.

Each function takes the dataset ``root`` and ``split`` plus the clip options of
:class:`~stbias.data.video.VideoClipDataset` (``num_frames``, ``sampling_rate``, ``size``, ...)
and returns that dataset. Videos named by the annotations but absent on disk are skipped with a
warning and listed in ``dataset.skipped``; a missing root or annotation file is a
:class:`~stbias.errors.StbiasError` naming the path and the layout that was expected.
"""

from __future__ import annotations

import csv
import json
import os
import re
from typing import Any

from stbias.data.video import VideoClipDataset, VideoRecord, list_frames
from stbias.errors import StbiasError

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")

LAYOUTS = {
    "ssv2": (
        "<root>/something-something-v2-{labels,train,validation}.json (or under <root>/labels/) "
        "and <root>/<id>.webm (or under <root>/20bn-something-something-v2/)"
    ),
    "kinetics": (
        "<root>/<split>.csv (or <root>/annotations/<split>.csv) with columns "
        "label,youtube_id,time_start,time_end,split and videos "
        "<youtube_id>_<start:06d>_<end:06d>.mp4 under <root>/<split>/<label>/, <root>/<split>/ "
        "or <root>/"
    ),
    "diving48": (
        "<root>/Diving48_V2_<split>.json (or Diving48_<split>.json) listing vid_name, label, "
        "start_frame, end_frame, and videos <root>/rgb/<vid_name>.mp4"
    ),
    "activitynet": (
        "<root>/activity_net.v1-3.min.json (the v1.3 database) and videos <root>/videos/v_<id>.mp4 "
        "(or <root>/v_<id>.mp4), or frame folders <root>/frames/v_<id>/"
    ),
    "kth": "<root>/[<action>/]personNN_<action>_dN_uncomp.avi",
    "davis": (
        "<root>/JPEGImages/480p/<seq>/*.jpg, <root>/Annotations/480p/<seq>/*.png and "
        "<root>/ImageSets/2016/{train,val}.txt (flow images, if any: <root>/<flow_dir>/<seq>/)"
    ),
    "tao_vos": (
        "<root>/<split>/JPEGImages/<video>/*.jpg and <root>/<split>/Annotations/<video>/*.png "
        "(split train or valid; videos from <root>/<split>/meta.json, else the JPEGImages folders)"
    ),
    "imagenet_vid": (
        "<root>/Data/VID/<split>/[<chunk>/]<snippet>/*.JPEG and "
        "<root>/Annotations/VID/<split>/[<chunk>/]<snippet>/*.xml (ILSVRC2015 VID; split train "
        "or val), or pixel masks <mask_root>/<snippet path>/<frame>.png"
    ),
    "video_folder": "<root>/<split>.csv with rows path,label (path relative to <root>)",
    "frame_folder": (
        "<root>/<video>/<frames> (or <root>/<class>/<video>/<frames> with class_folders, or "
        "<root>/<style>/<video>/<frames> for a stylized copy)"
    ),
}

SPLIT_ALIASES = {"val": "validation", "valid": "validation", "validate": "validation"}


def _layout_error(name: str, missing: str) -> StbiasError:
    return StbiasError(f"{name}: {missing} not found; expected layout: {LAYOUTS[name]}")


def _check_root(name: str, root: str | None) -> str:
    if root is None or str(root) == "":
        raise StbiasError(f"{name}: dataset.root is not set; expected layout: {LAYOUTS[name]}")
    root = os.path.expanduser(str(root))
    if not os.path.isdir(root):
        raise _layout_error(name, f"root {root!r}")
    return root


def _first_existing(name: str, candidates: list[str]) -> str:
    for path in candidates:
        if os.path.exists(path):
            return path
    raise _layout_error(name, " or ".join(repr(c) for c in candidates))


def _finish(
    name: str,
    records: list[VideoRecord],
    classes: list[str] | None,
    clip: dict[str, Any],
    annotations: list[str] = (),
) -> VideoClipDataset:
    """Drop records whose file is absent (listing them as skipped) and build the dataset.

    ``annotations``: the files the reader parsed (they key the probe's cache with the videos).
    """
    if not records:
        raise StbiasError(f"{name}: the annotations list no videos; expected: {LAYOUTS[name]}")
    present = [r for r in records if os.path.exists(r.path)]
    skipped = [f"{r.path}: missing" for r in records if not os.path.exists(r.path)]
    if not present:
        raise StbiasError(
            f"{name}: none of the {len(records)} videos exist (first: {records[0].path}); "
            f"expected layout: {LAYOUTS[name]}"
        )
    dataset = VideoClipDataset(present, classes=classes, skipped=skipped, **clip)
    dataset.annotations = [os.path.abspath(a) for a in annotations]
    return dataset


def ssv2(root: str | None, split: str = "train", **clip: Any) -> VideoClipDataset:
    """Something-Something v2: the released label/split JSON files and ``<id>.webm`` videos."""
    root = _check_root("ssv2", root)
    split = SPLIT_ALIASES.get(split, split)
    if split not in ("train", "validation", "test"):
        raise StbiasError(f"ssv2: unknown split {split!r}; valid: train, validation, test")
    ann = os.path.join(root, "labels") if os.path.isdir(os.path.join(root, "labels")) else root
    labels_path = _first_existing("ssv2", [os.path.join(ann, "something-something-v2-labels.json")])
    split_path = _first_existing(
        "ssv2", [os.path.join(ann, f"something-something-v2-{split}.json")]
    )
    with open(labels_path) as f:
        label_ids = {k: int(v) for k, v in json.load(f).items()}
    classes = [k for k, _ in sorted(label_ids.items(), key=lambda kv: kv[1])]
    with open(split_path) as f:
        entries = json.load(f)
    videos = os.path.join(root, "20bn-something-something-v2")
    videos = videos if os.path.isdir(videos) else root
    records = []
    for e in entries:
        vid = str(e["id"])
        label = -1
        if "template" in e:
            template = e["template"].replace("[", "").replace("]", "")
            if template not in label_ids:
                raise StbiasError(
                    f"ssv2: template {template!r} of video {vid} not in {labels_path}"
                )
            label = label_ids[template]
        records.append(VideoRecord(os.path.join(videos, f"{vid}.webm"), label, vid))
    return _finish("ssv2", records, classes, clip, [labels_path, split_path])


def _find_video(stem: str, folders: list[str]) -> str:
    for folder in folders:
        for ext in VIDEO_EXTENSIONS:
            path = os.path.join(folder, stem + ext)
            if os.path.exists(path):
                return path
    return os.path.join(folders[0], stem + VIDEO_EXTENSIONS[0])


def kinetics(root: str | None, split: str = "train", **clip: Any) -> VideoClipDataset:
    """Kinetics-400/600/700: the released CSV and ``<youtube_id>_<start>_<end>.mp4`` clips."""
    root = _check_root("kinetics", root)
    is_val = SPLIT_ALIASES.get(split, split) == "validation"
    names = ["val", "validate", "validation"] if is_val else [split]

    def csv_for(candidates: list[str]) -> list[str]:
        return [
            os.path.join(d, f"{c}.csv") for c in candidates for d in (root, f"{root}/annotations")
        ]

    csv_path = _first_existing("kinetics", csv_for(names))
    rows = _read_csv(csv_path)
    train_csv = [p for p in csv_for(["train"]) if os.path.exists(p)]
    class_rows = _read_csv(train_csv[0]) if train_csv else rows
    classes = sorted({r["label"] for r in class_rows if r.get("label")})
    index = {c: i for i, c in enumerate(classes)}
    split_dirs = [os.path.join(root, n) for n in names if os.path.isdir(os.path.join(root, n))]
    records = []
    for r in rows:
        stem = (
            f"{r['youtube_id']}_{int(float(r['time_start'])):06d}_{int(float(r['time_end'])):06d}"
        )
        label = r.get("label") or ""
        folders = [os.path.join(d, label) for d in split_dirs if label] + split_dirs + [root]
        label_id = index.get(label, -1)
        if label and label_id < 0:
            raise StbiasError(f"kinetics: label {label!r} of {stem} is not a training class")
        records.append(VideoRecord(_find_video(stem, folders), label_id, stem))
    return _finish("kinetics", records, classes, clip, [csv_path, *train_csv[:1]])


def _read_csv(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return [{k.strip(): (v or "").strip() for k, v in row.items()} for row in csv.DictReader(f)]


def diving48(root: str | None, split: str = "train", **clip: Any) -> VideoClipDataset:
    """Diving48 (V1 or V2): the JSON split lists and ``rgb/<vid_name>.mp4`` clips."""
    root = _check_root("diving48", root)
    ann = _first_existing(
        "diving48",
        [
            os.path.join(root, f"Diving48_V2_{split}.json"),
            os.path.join(root, f"Diving48_{split}.json"),
        ],
    )
    with open(ann) as f:
        entries = json.load(f)
    rgb = os.path.join(root, "rgb")
    records = [
        VideoRecord(
            os.path.join(rgb, f"{e['vid_name']}.mp4"),
            int(e["label"]),
            str(e["vid_name"]),
            # the released clips are trimmed already; the range is clipped to the file's length
            start=int(e.get("start_frame", 0)),
            end=int(e["end_frame"]) if "end_frame" in e else None,
        )
        for e in entries
    ]
    return _finish("diving48", records, [str(i) for i in range(48)], clip, [ann])


def activitynet(
    root: str | None,
    split: str = "training",
    annotation: str = "activity_net.v1-3.min.json",
    **clip: Any,
) -> VideoClipDataset:
    """ActivityNet v1.3: one sample per annotated segment, from videos or extracted frames."""
    root = _check_root("activitynet", root)
    split = {"train": "training", "val": "validation"}.get(split, split)
    ann = _first_existing("activitynet", [os.path.join(root, annotation)])
    with open(ann) as f:
        database = json.load(f)["database"]
    classes = sorted({a["label"] for v in database.values() for a in v.get("annotations", [])})
    index = {c: i for i, c in enumerate(classes)}
    folders = [os.path.join(root, "videos"), root]
    records = []
    for vid, info in sorted(database.items()):
        if info.get("subset") != split:
            continue
        frames = os.path.join(root, "frames", f"v_{vid}")
        path, fps = _find_video(f"v_{vid}", folders), None
        if not os.path.exists(path):
            path = _find_video(vid, folders)
        if not os.path.exists(path) and os.path.isdir(frames):
            # extracted frames span the whole video, so their rate is count / duration
            path, fps = frames, len(list_frames(frames)) / max(float(info["duration"]), 1e-6)
        for k, a in enumerate(info.get("annotations", [])):
            t0, t1 = (float(t) for t in a["segment"])
            records.append(
                VideoRecord(
                    path, index[a["label"]], f"{vid}_{k}", start_sec=t0, end_sec=t1, fps=fps
                )
            )
    return _finish("activitynet", records, classes, clip, [ann])


KTH_ACTIONS = ("boxing", "handclapping", "handwaving", "jogging", "running", "walking")
KTH_NAME = re.compile(r"person(\d+)_([a-z]+)_d(\d+)_uncomp\.avi$")


def kth(root: str | None, split: str = "train", **clip: Any) -> VideoClipDataset:
    """KTH actions: ``personNN_<action>_dN_uncomp.avi``; persons 1-16 train, 17-25 test."""
    root = _check_root("kth", root)
    if split not in ("train", "test"):
        raise StbiasError(f"kth: unknown split {split!r}; valid: train, test")
    persons = range(1, 17) if split == "train" else range(17, 26)
    records = []
    for dirpath, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            m = KTH_NAME.match(name)
            if m and int(m.group(1)) in persons and m.group(2) in KTH_ACTIONS:
                label = KTH_ACTIONS.index(m.group(2))
                records.append(VideoRecord(os.path.join(dirpath, name), label, name[:-4]))
    if not records:
        raise _layout_error("kth", f"no {split} videos under {root!r}")
    return _finish("kth", records, list(KTH_ACTIONS), clip)


def _flow_folder(name: str, root: str, flow_dir: str | None, video: str) -> str | None:
    """``<root>/<flow_dir>/<video>`` (``flow_dir`` may be absolute); None without ``flow_dir``."""
    if not flow_dir:
        return None
    base = os.path.join(root, os.path.expanduser(str(flow_dir)))
    if not os.path.isdir(base):
        raise StbiasError(
            f"{name}: dataset.flow_dir={flow_dir!r} is not a folder ({base}); give the folder of "
            "flow images laid out like the frames (<flow_dir>/<video>/<frame>.png), or "
            "dataset.flow_dir=null to compute the flow on the fly"
        )
    return os.path.join(base, video)


def _check_flow_folders(name: str, records: list[VideoRecord]) -> None:
    missing = [r.id for r in records if r.flow_dir is not None and not os.path.isdir(r.flow_dir)]
    if missing:
        raise StbiasError(
            f"{name}: no flow images for {len(missing)} video(s) (first: {missing[0]}) under "
            f"{os.path.dirname(records[0].flow_dir)}; every video needs its flow folder, or set "
            "dataset.flow_dir=null to compute the flow on the fly"
        )


def davis(
    root: str | None,
    split: str = "val",
    resolution: str = "480p",
    flow_dir: str | None = None,
    **clip: Any,
):
    """DAVIS 2016: frames with their foreground masks (``sample["mask"]``, ``(T, H, W)`` 0/1).

    There are no classes: ``label`` is the sequence's position in the split list. With
    ``flow_dir`` (a folder under ``root``, e.g. ``Flow/480p``, holding ``<seq>/<frame>.png``: the
    flow from each frame to the next, rendered as an image) samples also carry ``flow``.
    """
    root = _check_root("davis", root)
    listing = _first_existing("davis", [os.path.join(root, "ImageSets", "2016", f"{split}.txt")])
    with open(listing) as f:
        seqs = [line.strip() for line in f if line.strip()]
    records = [
        VideoRecord(
            os.path.join(root, "JPEGImages", resolution, seq),
            i,
            seq,
            mask_dir=os.path.join(root, "Annotations", resolution, seq),
            flow_dir=_flow_folder("davis", root, flow_dir, seq),
        )
        for i, seq in enumerate(seqs)
    ]
    _check_flow_folders("davis", records)
    clip.setdefault("frame_pattern", "*.jpg")
    return _finish("davis", records, seqs, clip, [listing])


def _image_folders(base: str, extensions: tuple[str, ...]) -> list[str]:
    """Folders under ``base`` (relative paths, sorted) that directly hold image files."""
    found = []
    for dirpath, _, files in os.walk(base):
        if any(f.lower().endswith(extensions) for f in files):
            found.append(os.path.relpath(dirpath, base))
    return sorted(found)


def tao_vos(
    root: str | None, split: str = "train", flow_dir: str | None = None, **clip: Any
) -> VideoClipDataset:
    """TAO-VOS (Voigtlaender et al., WACV'21) in its release layout, as foreground masks.

    Instance masks become foreground/background (any object is foreground), as Kowal et al. use
    them. Annotations are sparse: a frame without a mask file has ``mask`` 255 (not annotated),
    which training and evaluation ignore. ``label`` is the video's position in the split.
    """
    root = _check_root("tao_vos", root)
    split = {"val": "valid", "validation": "valid"}.get(split, split)
    base = os.path.join(root, split)
    images = _first_existing("tao_vos", [os.path.join(base, "JPEGImages")])
    annotations = _first_existing("tao_vos", [os.path.join(base, "Annotations")])
    meta = os.path.join(base, "meta.json")
    if os.path.exists(meta):
        with open(meta) as f:
            videos = sorted(json.load(f).get("videos", {}))
    else:
        videos = _image_folders(images, (".jpg", ".jpeg", ".png"))
    records = [
        VideoRecord(
            os.path.join(images, video),
            i,
            video,
            mask_dir=os.path.join(annotations, video),
            sparse_masks=True,
            flow_dir=_flow_folder("tao_vos", base, flow_dir, video),
        )
        for i, video in enumerate(videos)
    ]
    _check_flow_folders("tao_vos", records)
    clip.setdefault("frame_pattern", "*.jpg")
    return _finish("tao_vos", records, videos, clip)


def imagenet_vid(
    root: str | None,
    split: str = "train",
    mask_root: str | None = None,
    flow_dir: str | None = None,
    **clip: Any,
) -> VideoClipDataset:
    """ImageNet VID (ILSVRC2015 VID) snippets with foreground masks.

    By default the masks are the annotated boxes, filled (every annotated object is
    foreground): box-shaped weak labels. ``mask_root`` points at pixel masks instead (e.g.
    FusionSeg's weakly labelled ImageNet VID), ``<mask_root>/<snippet path>/<frame>.png``, frames
    without one being "not annotated" (255). ``label`` is the snippet's position in the split.
    """
    root = _check_root("imagenet_vid", root)
    split = {"validation": "val", "valid": "val"}.get(split, split)
    if split not in ("train", "val"):
        raise StbiasError(f"imagenet_vid: unknown split {split!r}; valid: train, val")
    frames = _first_existing("imagenet_vid", [os.path.join(root, "Data", "VID", split)])
    boxes = os.path.join(root, "Annotations", "VID", split)
    if mask_root is None and not os.path.isdir(boxes):
        raise _layout_error("imagenet_vid", repr(boxes))
    if mask_root is not None and not os.path.isdir(os.path.expanduser(str(mask_root))):
        raise StbiasError(f"imagenet_vid: mask_root {mask_root!r} is not a folder")
    snippets = _image_folders(frames, (".jpeg", ".jpg"))
    records = []
    for i, snippet in enumerate(snippets):
        if mask_root is None:
            masks = {"mask_dir": os.path.join(boxes, snippet), "mask_format": "voc_xml"}
        else:
            folder = os.path.join(os.path.expanduser(str(mask_root)), snippet)
            masks = {"mask_dir": folder, "sparse_masks": True}
        flow = _flow_folder("imagenet_vid", root, flow_dir, snippet)
        records.append(
            VideoRecord(os.path.join(frames, snippet), i, snippet, flow_dir=flow, **masks)
        )
    _check_flow_folders("imagenet_vid", records)
    clip.setdefault("frame_pattern", "*.JPEG")
    return _finish("imagenet_vid", records, snippets, clip)


def video_folder(
    root: str | None, split: str = "train", annotation: str | None = None, **clip: Any
) -> VideoClipDataset:
    """Any folder of videos with a CSV of ``path,label`` rows (a header line is optional).

    Labels may be integers or names; names are numbered in sorted order.
    """
    root = _check_root("video_folder", root)
    # an annotation path is taken relative to the root unless absolute; the default is in root
    ann = os.path.expanduser(str(annotation)) if annotation else f"{split}.csv"
    ann = _first_existing("video_folder", [ann if os.path.isabs(ann) else os.path.join(root, ann)])
    with open(ann, newline="") as f:
        rows = [r for r in csv.reader(f) if r and r[0].strip()]
    if rows and rows[0][0].strip().lower() == "path":
        rows = rows[1:]
    if any(len(r) < 2 for r in rows):
        raise StbiasError(f"video_folder: every row of {ann} needs path,label")
    labels = [r[1].strip() for r in rows]
    numeric = all(re.fullmatch(r"-?\d+", lab) for lab in labels)
    classes = None if numeric else sorted(set(labels))
    records = []
    for (path, *_), lab in zip(rows, labels):
        path = path.strip()
        label = int(lab) if numeric else classes.index(lab)
        full = path if os.path.isabs(path) else os.path.join(root, path)
        records.append(VideoRecord(full, label, os.path.splitext(path)[0]))
    return _finish("video_folder", records, classes, clip, [ann])


def frame_folder(
    root: str | None,
    split: str | None = None,
    style: str | int | None = None,
    annotation: str | None = None,
    class_folders: bool = False,
    pattern: str | None = None,
    **clip: Any,
) -> VideoClipDataset:
    """Folders of frames, one per video, e.g. the stylized release ``style_k/<video>/<frames>``.

    Args:
        style: a style folder under ``root`` (``3`` means ``style_3``); samples carry ``style``.
        annotation: CSV of ``video,label`` rows (video = folder relative to the style root);
            without it ``class_folders`` takes labels from ``<class>/<video>/``, else label is 0.
        pattern: glob of the frame files (default: any jpg/png/bmp).
        split: a subfolder of ``root`` holding the split (e.g. ``train``), when there is one.
    """
    root = _check_root("frame_folder", root)
    if split and os.path.isdir(os.path.join(root, split)):
        root = os.path.join(root, split)
    extra: dict[str, Any] = {}
    if style is not None:
        name = f"style_{style}" if isinstance(style, int) or str(style).isdigit() else str(style)
        if not os.path.isdir(os.path.join(root, name)):
            found = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
            raise StbiasError(f"frame_folder: no style folder {name!r} in {root}; found {found}")
        root = os.path.join(root, name)
        extra["style"] = name
    classes = None
    if annotation:
        ann = _first_existing(
            "frame_folder",
            [annotation if os.path.isabs(annotation) else os.path.join(root, annotation)],
        )
        with open(ann, newline="") as f:
            rows = [r for r in csv.reader(f) if r and r[0].strip() and r[0].strip() != "video"]
        items = [(r[0].strip(), int(r[1])) for r in rows]
    elif class_folders:
        classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        items = [
            (os.path.join(c, v), i)
            for i, c in enumerate(classes)
            for v in sorted(os.listdir(os.path.join(root, c)))
            if os.path.isdir(os.path.join(root, c, v))
        ]
    else:
        items = [(v, 0) for v in sorted(os.listdir(root)) if os.path.isdir(os.path.join(root, v))]
    records = [VideoRecord(os.path.join(root, v), lab, v, extra=dict(extra)) for v, lab in items]
    clip.setdefault("frame_pattern", pattern)
    return _finish("frame_folder", records, classes, clip, [ann] if annotation else [])
