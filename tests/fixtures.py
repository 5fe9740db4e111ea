"""Datasets, stylized copies and weights files in the layouts they are released in, small.

Videos are real files (encoded with PyAV, decoded by decord) at the datasets' usual frame sizes,
showing a textured square that moves (so that clips have both appearance and motion). Each writer
returns the dataset root.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import av
import cv2
import numpy as np
import torch

CODECS = {".mp4": ("libx264", "yuv420p"), ".webm": ("libvpx-vp9", "yuv420p")}


def moving_frames(n: int, width: int, height: int, seed: int) -> np.ndarray:
    """``(n, height, width, 3)`` uint8 frames: a textured square crossing a textured background."""
    rng = np.random.default_rng(seed)
    background = cv2.resize(
        rng.integers(0, 255, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8),
        (width, height),
        interpolation=cv2.INTER_NEAREST,
    )
    patch = rng.integers(0, 255, (height // 3, height // 3, 3), dtype=np.uint8)
    side = patch.shape[0]
    direction = 1 if seed % 2 else -1
    y = int(rng.integers(0, height - side))
    frames = np.repeat(background[None], n, axis=0)
    for t in range(n):
        x = int(round((width - side) * (t / max(n - 1, 1))))
        x = x if direction > 0 else width - side - x
        frames[t, y : y + side, x : x + side] = patch
    return frames


def write_video(path: Path, n: int, width: int, height: int, fps: int = 25, seed: int = 0) -> Path:
    """An mp4 (H.264) or webm (VP9) file of :func:`moving_frames`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    codec, pix = CODECS[path.suffix]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix
        for frame in moving_frames(n, width, height, seed):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


SSV2_TEMPLATES = [
    "Pushing [something] from left to right",
    "Pushing [something] from right to left",
]


def ssv2(root: Path, per_split: int = 3) -> Path:
    """Something-Something v2: label and split JSON files and ``<id>.webm`` at 240p."""
    labels = {t.replace("[", "").replace("]", ""): str(i) for i, t in enumerate(SSV2_TEMPLATES)}
    root.mkdir(parents=True, exist_ok=True)
    (root / "something-something-v2-labels.json").write_text(json.dumps(labels))
    vid = 1000
    for split in ("train", "validation"):
        entries = []
        for k in range(per_split):
            template = SSV2_TEMPLATES[k % 2]
            entries.append(
                {
                    "id": str(vid),
                    "label": template.replace("[something]", "a pen"),
                    "template": template,
                    "placeholders": ["a pen"],
                }
            )
            write_video(root / "20bn-something-something-v2" / f"{vid}.webm", 24, 427, 240, 12, k)
            vid += 1
        (root / f"something-something-v2-{split}.json").write_text(json.dumps(entries))
    return root


KINETICS_CLASSES = ["abseiling", "archery", "bowling", "juggling balls"]


def kinetics(root: Path, per_class: int = 2) -> Path:
    """Kinetics-400: ``train.csv`` / ``validate.csv`` sorted by label, as released, and clips
    ``<split>/<label>/<youtube_id>_<start>_<end>.mp4`` at 340x256."""
    root.mkdir(parents=True, exist_ok=True)
    for split, csv_name in (("train", "train.csv"), ("val", "validate.csv")):
        rows = []
        for c, label in enumerate(KINETICS_CLASSES):  # sorted by label, like the release
            for k in range(per_class):
                ytid = f"{split[:2]}{c}x{k}abcdefg"[:11]
                start = 10 * k
                rows.append((label, ytid, start, start + 10, split))
                name = f"{ytid}_{start:06d}_{start + 10:06d}.mp4"
                write_video(root / split / label / name, 20, 340, 256, 25, c * 10 + k)
        with open(root / csv_name, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
            writer.writerows(rows)
    return root


def diving48(root: Path, n: int = 3) -> Path:
    """Diving48 V2: ``Diving48_V2_train.json`` and ``rgb/<vid_name>.mp4``."""
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for k in range(n):
        name = f"_8Vy3dlHg2w_{k:05d}"
        write_video(root / "rgb" / f"{name}.mp4", 32, 224, 224, 30, k)
        entries.append({"vid_name": name, "label": k, "start_frame": 0, "end_frame": 32})
    (root / "Diving48_V2_train.json").write_text(json.dumps(entries))
    return root


def activitynet(root: Path, stylized: Path, styles: int = 2) -> tuple[Path, Path]:
    """ActivityNet v1.3 (``activity_net.v1-3.min.json``, ``videos/v_<id>.mp4`` at 30 fps) and the
    authors' stylized copy ``style_<k>/v_<id>/<%06d>.jpg`` at 5 fps, numbered from 1.

    Stylized frame ``i`` of style ``k`` is a flat image of grey level ``40 * k + i`` (so a test
    can tell which file a view was read from).
    """
    database = {}
    for k, vid in enumerate(("abc123def45", "xyz987uvw65")):
        seconds = 4.0
        write_video(root / "videos" / f"v_{vid}.mp4", int(seconds * 30), 320, 240, 30, k)
        database[vid] = {
            "subset": "validation",
            "duration": seconds,
            "url": f"https://www.youtube.com/watch?v={vid}",
            "annotations": [{"label": ["Long jump", "Archery"][k], "segment": [0.5, 3.5]}],
        }
        for style in range(1, styles + 1):
            folder = stylized / f"style_{style}" / f"v_{vid}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(1, int(seconds * 5) + 1):
                image = np.full((240, 320, 3), 40 * style + i, np.uint8)
                cv2.imwrite(str(folder / f"{i:06d}.jpg"), image)
    (root / "activity_net.v1-3.min.json").write_text(
        json.dumps({"version": "VERSION 1.3", "database": database, "taxonomy": []})
    )
    return root, stylized


def state_dict_file(path: Path, model: torch.nn.Module) -> Path:
    """A plain state dict, as VMZ and ig65m-pytorch release their weights (``.pth``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def pyth_checkpoint(path: Path, model: torch.nn.Module) -> Path:
    """A SlowFast / pytorchvideo model-zoo `.pyth` file: `{"model_state": ..., "epoch": ...}`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_state": model.state_dict(), "epoch": 196, "optimizer_state": {}}, path)
    return path


def _rle(mask: np.ndarray) -> dict:
    """The uncompressed COCO RLE YouTube-VIS's train files store: column-major runs, 0 first."""
    flat = mask.T.reshape(-1).astype(np.uint8)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    runs = np.diff(bounds).tolist()
    return {"size": list(mask.shape), "counts": [0, *runs] if flat[0] else runs}


def youtube_vis(root: Path, videos: int = 2, frames: int = 40) -> Path:
    """YouTube-VIS 2021's train split: ``train/JPEGImages/<video id>/<frame>.jpg`` (360x640) and
    ``train/instances.json`` with two moving squares per video, their masks as RLE."""
    h, w, side = 360, 640, 90
    rng = np.random.default_rng(5)
    entries, annotations = [], []
    for v in range(videos):
        name = f"{v:02d}a3f9c1e7"
        folder = root / "train" / "JPEGImages" / name
        folder.mkdir(parents=True)
        background = cv2.resize(
            rng.integers(0, 255, (h // 10, w // 10, 3), dtype=np.uint8),
            (w, h),
            interpolation=cv2.INTER_NEAREST,
        )
        names, segs = [], [[], []]
        for t in range(frames):
            image = background.copy()
            for k, colour in enumerate(((230, 40, 40), (40, 40, 230))):
                y = 40 + 150 * k
                x = int(round((w - side) * t / (frames - 1)))
                x = x if k == 0 else w - side - x
                mask = np.zeros((h, w), dtype=bool)
                mask[y : y + side, x : x + side] = True
                image[mask] = colour
                segs[k].append(_rle(mask))
            names.append(f"{name}/{5 * t:05d}.jpg")
            cv2.imwrite(str(root / "train" / "JPEGImages" / names[-1]), image[..., ::-1])
        entries.append(
            {"id": v + 1, "width": w, "height": h, "length": frames, "file_names": names}
        )
        for k in range(2):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "video_id": v + 1,
                    "category_id": 1 + 25 * k,
                    "segmentations": segs[k],
                    "bboxes": [None] * frames,
                    "areas": [side * side] * frames,
                    "iscrowd": 0,
                    "width": w,
                    "height": h,
                    "length": frames,
                }
            )
    categories = [{"supercategory": "object", "id": i, "name": f"c{i}"} for i in range(1, 41)]
    data = {"info": {}, "licenses": [], "videos": entries, "annotations": annotations}
    (root / "train" / "instances.json").write_text(json.dumps(data | {"categories": categories}))
    return root


def released_vistr_state(state: dict) -> dict:
    """A VisTR state dict under the names of the released ``VisTRsegm`` (github.com/Epiphqny/
    VisTR): the backbone under ``vistr.backbone.0.body.``, the mask head's modules at the top,
    everything else under ``vistr.``."""
    out = {}
    for key, value in state.items():
        if key.startswith("backbone."):
            out["vistr.backbone.0.body." + key[len("backbone.") :]] = value
        elif key.split(".")[0] in ("bbox_attention", "mask_head", "insmask_head"):
            out[key] = value
        else:
            out["vistr." + key] = value
    return out


def vistr_checkpoint(path: Path, model: torch.nn.Module) -> Path:
    """A released VisTR file (``vistr_r50.pth``): ``{"model": <released key names>, ...}``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": released_vistr_state(model.state_dict()), "epoch": 17}, path)
    return path
