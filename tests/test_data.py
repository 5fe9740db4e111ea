"""Tests of stbias.data: real video files written here and decoded by decord, synthetic data."""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
import re
import struct

import av
import cv2
import numpy as np
import pytest
import torch
from fixtures import moving_frames
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from skimage.morphology import skeletonize
from torch.utils.data import DataLoader

from stbias.data import (
    BrushMNIST,
    PlacesFacesMNIST,
    activitynet,
    davis,
    diving48,
    frame_folder,
    kinetics,
    kth,
    ssv2,
    temporal_indices,
    video_folder,
    video_to_float,
)
from stbias.data.brushmnist import TEMPLATES
from stbias.data.loading import loader_kwargs, split_loader_options
from stbias.data.readers import DecodeError, available_backends, open_video
from stbias.data.sources import EMBEDDED_PLACES, mnist_digits
from stbias.errors import StbiasError

CONF = os.path.join(os.path.dirname(__file__), "..", "conf")
STEP = 10  # frame t of a test video has every pixel at STEP * t: decoded frames name themselves
CODECS = {
    ".mp4": ("libx264", "yuv420p"),
    ".webm": ("libvpx-vp9", "yuv420p"),
    ".avi": ("mjpeg", "yuvj420p"),
}
CLIP = dict(num_frames=4, sampling_rate=2, size=16, short_side=24)


def write_video(path, n: int = 20, w: int = 40, h: int = 32, fps: int = 25) -> str:
    """An n-frame video whose frame t is uniformly STEP * t, in the codec its extension implies."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    codec, pix = CODECS[os.path.splitext(path)[1]]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, pix
        for t in range(n):
            frame = np.full((h, w, 3), STEP * t, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return str(path)


def write_corrupt(path) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    return str(path)


def decoded_frames(sample) -> np.ndarray:
    """Which source frame each clip frame is, read from its pixel values."""
    return np.round(sample["video"].float().mean(dim=(1, 2, 3)).numpy() / STEP).astype(int)


def check_clip(sample, frames_in_video=None):
    video = sample["video"]
    assert video.dtype == torch.uint8 and tuple(video.shape) == (4, 16, 16, 3)
    idx = sample["frame_indices"].numpy()
    np.testing.assert_array_equal(decoded_frames(sample), idx)
    if frames_in_video is not None:
        assert set(idx) <= set(frames_in_video)


# ---------------------------------------------------------------- clip sampling


def test_temporal_indices_modes():
    np.testing.assert_array_equal(temporal_indices(20, 4, 2, "centre"), [6, 8, 10, 12])
    np.testing.assert_array_equal(temporal_indices(8, 4, 1, "uniform"), [1, 3, 5, 7])
    # short video: 4 x 3 spans 10 frames, a 5-frame video loops
    np.testing.assert_array_equal(temporal_indices(5, 4, 3, "centre"), [0, 3, 1, 4])
    rng = np.random.default_rng(0)
    starts = {int(temporal_indices(20, 4, 2, "random", rng)[0]) for _ in range(200)}
    assert starts == set(range(0, 14))
    views = [temporal_indices(20, 4, 2, "centre", view=v, num_views=3) for v in range(3)]
    assert [int(v[0]) for v in views] == [0, 7, 13]
    with pytest.raises(StbiasError, match="unknown temporal sampling 'middle'; valid"):
        temporal_indices(20, 4, 2, "middle")


def test_video_to_float():
    video = torch.randint(0, 256, (2, 3, 5, 6, 3), dtype=torch.uint8)
    out = video_to_float(video)
    assert out.shape == (2, 3, 3, 5, 6) and out.dtype == torch.float32
    assert torch.equal(out[1, 2, 0], video[1, 0, :, :, 2].float() / 255)
    assert video_to_float(video[0]).shape == (3, 3, 5, 6)


# ---------------------------------------------------------------- real datasets


def test_ssv2(tmp_path, caplog):
    labels = {"Holding something": "0", "Pushing something from left to right": "1"}
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels/something-something-v2-labels.json").write_text(json.dumps(labels))
    train = [
        {
            "id": "11",
            "label": "holding a cup",
            "template": "Holding [something]",
            "placeholders": ["a cup"],
        },
        {
            "id": "12",
            "label": "pushing pen",
            "template": "Pushing [something] from left to right",
            "placeholders": ["pen"],
        },
        {
            "id": "13",
            "label": "holding x",
            "template": "Holding [something]",
            "placeholders": ["x"],
        },
        {
            "id": "14",
            "label": "holding y",
            "template": "Holding [something]",
            "placeholders": ["y"],
        },
    ]
    (tmp_path / "labels/something-something-v2-train.json").write_text(json.dumps(train))
    (tmp_path / "labels/something-something-v2-validation.json").write_text(json.dumps(train[:1]))
    videos = tmp_path / "20bn-something-something-v2"
    write_video(videos / "11.webm", n=20)
    write_video(videos / "12.webm", n=12)
    write_corrupt(videos / "13.webm")  # 14 is missing
    with caplog.at_level(logging.WARNING):
        ds = ssv2(str(tmp_path), "train", temporal="uniform", **CLIP)
    assert len(ds) == 3 and ds.num_skipped == 1 and "14.webm: missing" in ds.skipped[0]
    assert sum("14.webm" in r.message for r in caplog.records) == 1
    assert ds.classes == list(labels)
    a, b = ds[0], ds[1]
    assert (a["label"], a["id"], b["label"], b["id"]) == (0, "11", 1, "12")
    check_clip(a)
    np.testing.assert_array_equal(a["frame_indices"], [2, 7, 12, 17])  # uniform over 20 frames
    np.testing.assert_array_equal(b["frame_indices"], [1, 4, 7, 10])
    c = ds[2]  # the corrupt video: replaced by the next readable one and counted
    assert c["skipped"] == 1 and c["id"] == "11" and a["skipped"] == 0
    assert ds.num_skipped == 2 and "13.webm" in ds.skipped[1]
    assert len(ssv2(str(tmp_path), "val", **CLIP)) == 1


def test_kinetics_per_class_and_flat(tmp_path):
    rows = [
        ("abseiling", "vidA", 10, 20, "train"),
        ("zumba", "vidB", 0, 10, "train"),
        ("abseiling", "vidC", 5, 15, "train"),
    ]
    (tmp_path / "annotations").mkdir()
    for split, part in (("train", rows), ("validate", rows[1:2])):
        with open(tmp_path / f"annotations/{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
            w.writerows(part)
    write_video(tmp_path / "train/abseiling/vidA_000010_000020.mp4", n=20)
    write_video(tmp_path / "train/zumba/vidB_000000_000010.mp4", n=6)  # loops: 4 x 2 > 6
    write_video(tmp_path / "train/abseiling/vidC_000005_000015.mp4", n=16)
    write_video(tmp_path / "val/vidB_000000_000010.mp4", n=10)  # flat per-split layout
    ds = kinetics(str(tmp_path), "train", **CLIP)
    assert ds.classes == ["abseiling", "zumba"] and len(ds) == 3 and ds.num_skipped == 0
    s = [ds[i] for i in range(3)]
    assert [x["label"] for x in s] == [0, 1, 0]
    assert s[0]["id"] == "vidA_000010_000020"
    for x in s:
        check_clip(x)
    np.testing.assert_array_equal(s[1]["frame_indices"], [0, 2, 4, 0])
    val = kinetics(str(tmp_path), "val", **CLIP)
    assert len(val) == 1 and val[0]["label"] == 1


def test_diving48_frame_range(tmp_path):
    entries = [
        {"vid_name": "d_00001", "label": 7, "start_frame": 0, "end_frame": 20},
        {"vid_name": "d_00002", "label": 47, "start_frame": 10, "end_frame": 18},
    ]
    (tmp_path / "Diving48_V2_train.json").write_text(json.dumps(entries))
    write_video(tmp_path / "rgb/d_00001.mp4", n=20)
    write_video(tmp_path / "rgb/d_00002.mp4", n=22)
    ds = diving48(str(tmp_path), "train", **CLIP)
    a, b = ds[0], ds[1]
    assert (a["label"], b["label"], b["id"]) == (7, 47, "d_00002")
    check_clip(a)
    check_clip(b, range(10, 18))
    np.testing.assert_array_equal(b["frame_indices"], [10, 12, 14, 16])


def test_activitynet_segments(tmp_path):
    db = {
        "version": "VERSION 1.3",
        "taxonomy": [],
        "database": {
            "abc": {
                "subset": "training",
                "duration": 0.8,
                "resolution": "40x32",
                "url": "",
                "annotations": [
                    {"segment": [0.0, 0.32], "label": "Zumba"},
                    {"segment": [0.4, 0.76], "label": "Archery"},
                ],
            },
            "def": {
                "subset": "validation",
                "duration": 0.8,
                "resolution": "40x32",
                "url": "",
                "annotations": [{"segment": [0.1, 0.5], "label": "Archery"}],
            },
            "fra": {
                "subset": "training",
                "duration": 0.8,
                "resolution": "40x32",
                "url": "",
                "annotations": [{"segment": [0.2, 0.6], "label": "Zumba"}],
            },
        },
    }
    (tmp_path / "activity_net.v1-3.min.json").write_text(json.dumps(db))
    write_video(tmp_path / "videos/v_abc.mp4", n=20, fps=25)
    # extracted frames: 20 frames over 0.8 s -> 25 frames per second
    for t in range(20):
        path = tmp_path / f"frames/v_fra/img_{t:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.full((32, 40, 3), STEP * t, np.uint8))
    ds = activitynet(str(tmp_path), "training", **CLIP)
    assert ds.classes == ["Archery", "Zumba"] and len(ds) == 3
    a, b, c = ds[0], ds[1], ds[2]
    assert [x["label"] for x in (a, b, c)] == [1, 0, 1]
    assert [x["id"] for x in (a, b, c)] == ["abc_0", "abc_1", "fra_0"]
    check_clip(a, range(0, 8))
    check_clip(b, range(10, 19))
    check_clip(c, range(5, 15))


def test_kth_person_split(tmp_path):
    for person, action in ((1, "boxing"), (16, "walking"), (17, "running"), (25, "handwaving")):
        write_video(tmp_path / action / f"person{person:02d}_{action}_d1_uncomp.avi", n=12)
    train, test = kth(str(tmp_path), "train", **CLIP), kth(str(tmp_path), "test", **CLIP)
    assert [train[i]["label"] for i in range(len(train))] == [0, 5]
    assert sorted(test[i]["label"] for i in range(len(test))) == [2, 4]
    assert train[0]["id"] == "person01_boxing_d1_uncomp"
    check_clip(test[0])


@pytest.mark.parametrize("backend", available_backends())
def test_video_folder_skips_corrupt_and_empty_files(tmp_path, backend):
    write_video(tmp_path / "a.mp4", n=10)
    write_video(tmp_path / "sub/b.avi", n=14)
    write_corrupt(tmp_path / "bad.mp4")
    (tmp_path / "empty.webm").write_bytes(b"")
    write_video(tmp_path / "c.webm", n=9)
    rows = [
        "path,label",
        "a.mp4,cat",
        "bad.mp4,dog",
        "sub/b.avi,dog",
        "empty.webm,cat",
        "c.webm,cat",
        "gone.mp4,dog",
    ]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    ds = video_folder(str(tmp_path), "train", backend=backend, **CLIP)
    assert ds.classes == ["cat", "dog"] and len(ds) == 5 and ds.num_skipped == 1
    loader = DataLoader(ds, batch_size=2, num_workers=2)
    batches = list(loader)
    assert sum(int(b["skipped"].sum()) for b in batches) == 2  # bad.mp4 and empty.webm
    ids = [i for b in batches for i in b["id"]]
    labels = [int(x) for b in batches for x in b["label"]]
    assert ids == ["a", "sub/b", "sub/b", "c", "c"] and labels == [0, 1, 1, 0, 0]
    assert batches[0]["video"].shape == (2, 4, 16, 16, 3)
    for b in batches:
        for k in range(len(b["id"])):
            got = np.round(b["video"][k].float().mean(dim=(1, 2, 3)).numpy() / STEP)
            np.testing.assert_array_equal(got, b["frame_indices"][k].numpy())


@pytest.mark.parametrize("backend", available_backends())
def test_pyav_fallback_for_widths_decord_misreads(tmp_path, backend):
    write_video(tmp_path / "narrow.mp4", n=8, w=48, h=32)  # decord 0.6 cannot copy 48-wide frames
    (tmp_path / "train.csv").write_text("narrow.mp4,1\n")
    s = video_folder(str(tmp_path), backend=backend, **CLIP)[0]
    assert s["skipped"] == 0
    check_clip(s)


def write_gop_video(path, frames: np.ndarray, gop: int, fps: int = 25) -> str:
    """``frames`` encoded with a key frame every ``gop`` frames (so that reads must seek)."""
    codec, pix = CODECS[os.path.splitext(path)[1]]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix
        stream.codec_context.gop_size = gop
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return str(path)


@pytest.mark.parametrize("ext", [".mp4", ".webm", ".avi"])
def test_backends_return_the_same_frames_at_the_same_numbers(tmp_path, ext):
    if available_backends() != ["decord", "pyav"]:
        pytest.skip(f"needs decord and PyAV; installed: {available_backends()}")
    n = 60
    # a moving texture over a background 3 levels brighter each frame: every frame differs
    offset = 3 * np.arange(n, dtype=np.uint8)[:, None, None, None]
    frames = moving_frames(n, 96, 64, seed=3) // 4 + offset
    path = write_gop_video(tmp_path / f"v{ext}", frames, gop=16)
    decord_reader, pyav_reader = open_video(path, "decord"), open_video(path, "pyav")
    assert len(decord_reader) == len(pyav_reader) == n
    assert decord_reader.fps == pyav_reader.fps == 25.0
    for indices in ([0, 1, 2, 3], [5, 15, 16, 17, 40], list(range(20, 59, 8)), [n - 1]):
        got = pyav_reader.read(np.array(indices))
        np.testing.assert_array_equal(got, decord_reader.read(np.array(indices)))
        # each decoded frame is closest to the source frame of its number (codec loss aside)
        err = np.abs(got[:, None].astype(np.int16) - frames[None].astype(np.int16))
        np.testing.assert_array_equal(err.mean(axis=(2, 3, 4)).argmin(axis=1), indices)
    # a clip dataset over the file gives the same samples with either backend
    (tmp_path / "train.csv").write_text(f"v{ext},0\n")
    clip = dict(num_frames=8, sampling_rate=7, size=32, short_side=40)
    a = video_folder(str(tmp_path), backend="decord", **clip)[0]
    b = video_folder(str(tmp_path), backend="pyav", decode_threads=2, **clip)[0]
    assert a["frame_indices"].tolist() == list(range(5, 55, 7))
    assert torch.equal(a["video"], b["video"]) and a["frame_times"].equal(b["frame_times"])


def test_backend_choice_and_errors(tmp_path, monkeypatch):
    write_video(tmp_path / "a.webm", n=12)
    (tmp_path / "train.csv").write_text("a.webm,0\n")
    with pytest.raises(
        StbiasError, match="unknown video backend 'ffmpeg'; valid: auto, decord, pyav"
    ):
        video_folder(str(tmp_path), backend="ffmpeg")
    with pytest.raises(StbiasError, match="decode_threads must be >= 0, got -1"):
        open_video("x.mp4", "pyav", threads=-1)
    with pytest.raises(DecodeError, match="cannot decode"):
        open_video(write_corrupt(tmp_path / "bad.mp4"), "pyav")
    # where decord has no wheel (macOS on Apple silicon) auto means PyAV
    import stbias.data.readers as readers

    monkeypatch.setattr(readers, "_importable", lambda module: module != "decord")
    assert readers.resolve_backend("auto") == "pyav"
    with pytest.raises(StbiasError, match=r"'decord' is not installed \(pip install decord\)"):
        readers.resolve_backend("decord")
    ds = video_folder(str(tmp_path), **CLIP)
    assert ds.backend == "pyav"
    check_clip(ds[0])


def test_loader_settings():
    assert loader_kwargs(0, 4, "auto", "cpu") == {"num_workers": 0, "pin_memory": False}
    assert loader_kwargs(2, 4, "auto", "cuda") == {
        "num_workers": 2,
        "pin_memory": True,
        "prefetch_factor": 4,
    }
    workers = loader_kwargs("auto")["num_workers"]
    assert workers == max(min(len(os.sched_getaffinity(0)) - 1, 8), 0)
    with pytest.raises(StbiasError, match="num_workers must be an integer >= 0 or 'auto', got -2"):
        loader_kwargs(-2)
    with pytest.raises(StbiasError, match="pin_memory must be auto, true or false, got 'yes'"):
        loader_kwargs(1, pin_memory="yes")
    with pytest.raises(StbiasError, match="prefetch_factor must be >= 1, got 0"):
        loader_kwargs(1, prefetch_factor=0)


def test_frame_folder_stylized_layout(tmp_path):
    for k, offset in ((0, 0), (1, 1)):
        for video, n in (("v1", 12), ("v2", 6)):
            for t in range(n):
                path = tmp_path / f"style_{k}/{video}/{t:05d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(path), np.full((32, 40, 3), STEP * (t + offset), np.uint8))
    (tmp_path / "style_1/v3").mkdir()  # a folder without frames is skipped
    (tmp_path / "style_1/labels.csv").write_text("video,label\nv1,3\nv2,5\nv3,1\n")
    ds0 = frame_folder(str(tmp_path), style=0, **CLIP)
    ds1 = frame_folder(str(tmp_path), style=1, annotation="labels.csv", **CLIP)
    a0, a1 = ds0[0], ds1[0]
    assert a0["style"] == "style_0" and a1["style"] == "style_1" and a1["label"] == 3
    check_clip(a0)
    np.testing.assert_array_equal(decoded_frames(a1) - 1, a1["frame_indices"])
    assert ds1[1]["label"] == 5 and ds1[2]["skipped"] == 1 and ds1.num_skipped == 1
    with pytest.raises(StbiasError, match="style_7"):
        frame_folder(str(tmp_path), style=7)


def test_davis_frames_and_masks(tmp_path):
    (tmp_path / "ImageSets/2016").mkdir(parents=True)
    (tmp_path / "ImageSets/2016/val.txt").write_text("bear\nboat\n")
    for seq in ("bear", "boat"):
        for t in range(8):
            img = tmp_path / f"JPEGImages/480p/{seq}/{t:05d}.jpg"
            msk = tmp_path / f"Annotations/480p/{seq}/{t:05d}.png"
            img.parent.mkdir(parents=True, exist_ok=True)
            msk.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(img), np.full((32, 40, 3), STEP * t, np.uint8))
            mask = np.zeros((32, 40), np.uint8)
            mask[:, : 5 * t] = 255  # foreground grows to the right with t
            cv2.imwrite(str(msk), mask)
    ds = davis(str(tmp_path), "val", num_frames=4, sampling_rate=2, size=None)
    s = ds[1]
    assert s["id"] == "boat" and s["mask"].shape == (4, 32, 40)
    for k, t in enumerate(s["frame_indices"].tolist()):
        assert int(s["mask"][k].sum()) == 32 * 5 * t
    assert decoded_frames(s).tolist() == s["frame_indices"].tolist()


def test_multiview_resize_and_random_crop(tmp_path):
    write_video(tmp_path / "a.mp4", n=20, w=64, h=32)
    (tmp_path / "test.csv").write_text("a.mp4,0\n")
    ds = video_folder(str(tmp_path), "test", num_views=3, **CLIP)
    assert len(ds) == 3
    starts = [int(ds[v]["frame_indices"][0]) for v in range(3)]
    assert starts == [0, 7, 13] and [ds[v]["view"] for v in range(3)] == [0, 1, 2]
    # a horizontal ramp shows where a crop was taken
    ramp = np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 3, (32, 1, 3))
    path = tmp_path / "ramp/f"
    path.mkdir(parents=True)
    for t in range(4):
        cv2.imwrite(str(path / f"{t}.png"), ramp)
    rnd = frame_folder(str(tmp_path / "ramp"), num_frames=2, size=16, crop="random", seed=3)
    cen = frame_folder(str(tmp_path / "ramp"), num_frames=2, size=16, short_side=16)
    assert cen[0]["video"].shape == (2, 16, 16, 3)
    centre_col = cen[0]["video"][0, 0, :, 0].float()
    assert abs(float(centre_col.mean()) - 3 * 31.5) < 4  # resized 32x64 -> 16x32, middle crop
    assert torch.equal(rnd[0]["video"], rnd[0]["video"])  # same seed, index, epoch: same crop
    firsts = set()
    for epoch in range(6):
        rnd.set_epoch(epoch)
        firsts.add(int(rnd[0]["video"][0, 0, 0, 0]))
    assert len(firsts) > 1


def test_missing_root_and_annotation_errors(tmp_path):
    with pytest.raises(StbiasError, match=r"nowhere.*expected layout: .*webm"):
        ssv2(str(tmp_path / "nowhere"))
    with pytest.raises(StbiasError, match=r"Diving48_V2_train\.json.*expected layout"):
        diving48(str(tmp_path))
    with pytest.raises(StbiasError, match=r"dataset.root is not set.*personNN"):
        kth(None)
    with pytest.raises(StbiasError, match=r"ImageSets/2016/val\.txt"):
        davis(str(tmp_path))
    with pytest.raises(StbiasError, match=r"train\.csv.*path,label"):
        video_folder(str(tmp_path))


def test_every_dataset_yaml_builds(compose, tmp_path):
    write_video(tmp_path / "a.mp4", n=10)
    (tmp_path / "train.csv").write_text("a.mp4,2\n")
    names = sorted(
        os.path.basename(p)[:-5] for p in glob.glob(os.path.join(CONF, "dataset/*.yaml"))
    )
    assert {
        "ssv2",
        "kinetics",
        "diving48",
        "activitynet",
        "kth",
        "davis",
        "video_folder",
        "frame_folder",
        "brushmnist",
        "pfm",
    } <= set(names)
    assert compose().dataset._target_.endswith("PlacesFacesMNIST")
    for name in names:
        cfg = compose(f"dataset={name}")
        # a generated dataset says how many clips it makes; a reader of files needs a root
        if "num_samples" in cfg.dataset:
            ds = instantiate(cfg.dataset, num_frames=4, size=32, num_samples=3)
            assert ds[2]["video"].shape[:3] == (4, 32, 32)
        elif name == "video_folder":
            node, loader = split_loader_options(OmegaConf.to_container(cfg.dataset, resolve=True))
            assert loader == {"num_workers": "auto", "prefetch_factor": 2, "pin_memory": "auto"}
            ds = instantiate(node, root=str(tmp_path))
            spec = cfg.model.input  # clip geometry follows the model
            assert ds[0]["label"] == 2
            assert ds[0]["video"].shape == (spec.frames, spec.size, spec.size, 3)
        else:
            with pytest.raises(InstantiationException) as info:
                instantiate(cfg.dataset)
            assert isinstance(info.value.__cause__, StbiasError)
            assert "dataset.root is not set; expected layout" in str(info.value.__cause__)


# ---------------------------------------------------------------- BrushMNIST


def _skeleton(digit, canvas):
    return skeletonize(cv2.resize(digit, (canvas, canvas), interpolation=cv2.INTER_LINEAR) >= 128)


@pytest.fixture(scope="module")
def brush_small():
    return BrushMNIST(num_frames=150, size=64, brush_size=8, num_samples=200, seed=1)


def test_brushmnist_trajectory_on_skeleton_and_continuous(brush_small):
    digits, labels = mnist_digits(None, "train")
    canvas, half = 64 - 8, 4
    for index in range(0, 100, 7):  # every shape class
        s = brush_small[index]
        assert s["label"] == 10 * s["shape_label"] + s["brush_label"] == index
        digit = s["trajectory_digit"]
        assert labels[digit] == s["shape_label"]
        pos = s["trajectory"].numpy() - half
        skel = _skeleton(digits[digit], canvas)
        assert skel[pos[:, 0], pos[:, 1]].all()
        steps = np.hypot(*np.diff(pos, axis=0).T)
        assert steps.max() <= 1.5, steps.max()  # 8-neighbour moves along the skeleton
        # the brush is drawn where the trajectory says
        video = s["video"][..., 0].numpy()
        for t in (0, 75, 149):
            ys, xs = np.nonzero(video[t])
            y, x = pos[t]
            assert ys.min() >= y and ys.max() < y + 8 and xs.min() >= x and xs.max() < x + 8


def _waypoint_order_ok(pos, skel, template, tol):
    pix = np.argwhere(skel)
    lo, span = pix.min(0), np.maximum(pix.max(0) - pix.min(0), 1)
    start = 0
    for x, y in template:
        target = pix[np.argmin(((pix - (lo + np.array([y, x]) * span)) ** 2).sum(1))]
        near = np.flatnonzero(np.hypot(*(pos[start:] - target).T) <= tol)
        if len(near) == 0:
            return False
        start += int(near[0])
    return True


def test_brushmnist_follows_template_direction(brush_small):
    digits, _ = mnist_digits(None, "train")
    for shape in range(10):
        s = brush_small[10 * shape + 3]
        pos = s["trajectory"].numpy() - 4
        skel = _skeleton(digits[s["trajectory_digit"]], 56)
        assert _waypoint_order_ok(pos, skel, TEMPLATES[shape], tol=4.5), shape
    one = brush_small[10 * 1 + 2]["trajectory"].numpy()
    assert np.corrcoef(np.arange(150), one[:, 0])[0, 1] > 0.95  # a 1 is written downwards
    seven = brush_small[10 * 7 + 2]["trajectory"].numpy()
    assert seven[30, 1] > seven[0, 1] + 10 and seven[-1, 0] > seven[0, 0] + 20  # right, then down


def test_brushmnist_variants_and_determinism():
    kw = dict(num_frames=16, size=64, num_samples=50, seed=5)
    normal = BrushMNIST(**kw)[23]["video"]
    footprint = BrushMNIST(variant="footprint", **kw)[23]["video"]
    reverse = BrushMNIST(variant="reversed", **kw)[23]["video"]
    assert normal.shape == (16, 64, 64, 1)
    assert all(torch.equal(footprint[0], f) for f in footprint)
    assert torch.equal(footprint[0], normal.max(dim=0).values)
    assert torch.equal(reverse, normal.flip(0))
    assert torch.equal(BrushMNIST(**kw)[23]["video"], normal)
    assert not torch.equal(BrushMNIST(**{**kw, "seed": 6})[23]["video"], normal)
    assert BrushMNIST(**kw, channels=3)[23]["video"].shape == (16, 64, 64, 3)
    long = BrushMNIST(**{**kw, "num_frames": 64})[23]["trajectory"]
    sub = BrushMNIST(**{**kw, "sampling_rate": 4})[23]["trajectory"]
    assert torch.equal(sub, long[::4])
    with pytest.raises(StbiasError, match="valid: normal, footprint, reversed"):
        BrushMNIST(variant="sideways")


def test_brushmnist_paper_defaults_and_workers():
    ds = BrushMNIST(num_samples=4)
    s = ds[3]
    assert s["video"].shape == (150, 224, 224, 1) and s["video"].dtype == torch.uint8
    assert ds.brush_size == 28
    small = BrushMNIST(num_frames=8, size=32, num_samples=4)
    batches = list(DataLoader(small, batch_size=2, num_workers=2))
    again = torch.cat([b["video"] for b in batches])
    assert torch.equal(again, torch.stack([small[i]["video"] for i in range(4)]))


def _write_idx(path, array, magic):
    with open(path, "wb") as f:
        f.write(struct.pack(">" + "I" * (1 + array.ndim), magic, *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def test_real_mnist_through_torchvision(tmp_path):
    digits, labels = mnist_digits(None, "train")
    pick = np.concatenate([np.flatnonzero(labels == c)[:2] for c in range(10)])
    raw = tmp_path / "MNIST/raw"
    raw.mkdir(parents=True)
    for prefix in ("train", "t10k"):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", 255 - digits[pick], 2051)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels[pick], 2049)
    real, real_labels = mnist_digits(str(tmp_path), "train")
    assert real.shape == (20, 28, 28) and np.array_equal(real_labels, labels[pick])
    s = BrushMNIST(mnist_root=str(tmp_path), num_frames=8, size=32, num_samples=20)[13]
    assert s["trajectory_digit"] < 20 and s["shape_label"] == 1
    with pytest.raises(StbiasError, match="MNIST"):
        mnist_digits(str(tmp_path / "empty"), "train")


# ---------------------------------------------------------------- Places+Faces+MNIST


def test_pfm_labels_determinism_and_two_digit_motions():
    ds = PlacesFacesMNIST(num_places=16, num_motions=12, num_frames=16, size=64, num_samples=400)
    s = ds[16 * 12 - 1]
    assert (s["label"], s["place_label"], s["shape_label"]) == (191, 15, 11)
    assert s["video"].shape == (16, 64, 64, 3)
    assert torch.equal(
        ds[5]["video"], PlacesFacesMNIST(num_places=16, num_motions=12, num_samples=400)[5]["video"]
    )
    # the background is static: outside the face every frame is the same image
    video, traj, f = s["video"].numpy(), s["trajectory"].numpy() - 8, 16
    keep = np.ones((16, 64, 64), bool)
    for t, (y, x) in enumerate(traj):
        keep[t, y : y + f, x : x + f] = False
    both = keep[0] & keep[-1]
    assert np.array_equal(video[0][both], video[-1][both])
    # class 11 writes "1" then "1": two separate downward strokes
    assert traj[7, 0] > traj[0, 0] and traj[15, 0] > traj[8, 0] and traj[8, 0] < traj[7, 0]
    # samples of one place class differ (crop, flip and colour jitter)
    a, b = ds[0]["video"][0], ds[192]["video"][0]
    assert ds[192]["label"] == ds[0]["label"] == 0 and not torch.equal(a, b)
    assert len(EMBEDDED_PLACES) >= 16
    with pytest.raises(StbiasError, match="embedded place classes"):
        PlacesFacesMNIST(num_places=len(EMBEDDED_PLACES) + 1)


def test_pfm_places365_and_lfw_folders(tmp_path):
    colours = {"a/airfield": (255, 0, 0), "b/bakery/shop": (0, 0, 255)}
    (tmp_path / "places").mkdir()
    (tmp_path / "places/categories_places365.txt").write_text("/a/airfield 0\n/b/bakery/shop 1\n")
    for name, rgb in colours.items():
        folder = tmp_path / "places/data_256" / name
        folder.mkdir(parents=True)
        for k in range(2):
            cv2.imwrite(str(folder / f"{k:08d}.jpg"), np.full((40, 40, 3), rgb[::-1], np.uint8))
    face = tmp_path / "lfw/Jane_Doe/Jane_Doe_0001.jpg"
    face.parent.mkdir(parents=True)
    cv2.imwrite(str(face), np.full((250, 250, 3), (0, 255, 0), np.uint8))
    ds = PlacesFacesMNIST(
        num_places=2,
        num_motions=3,
        num_frames=8,
        size=32,
        num_samples=6,
        places_root=str(tmp_path / "places"),
        faces_root=str(tmp_path / "lfw"),
    )
    assert ds.place_names == ("a/airfield", "b/bakery/shop")
    for index in (0, 4):
        s = ds[index]
        video = s["video"].numpy().astype(int)
        expected = np.array(colours[ds.place_names[s["place_label"]]])
        corner_ok = [
            np.abs(video[t, 0, 0] - expected).max() < 40
            or np.abs(video[t, 0, 0] - (0, 255, 0)).max() < 40
            for t in range(8)
        ]
        assert all(corner_ok)
        assert (np.abs(video - (0, 255, 0)).max(axis=-1) < 40).any(axis=(1, 2)).all()  # the face


def test_video_folder_with_a_relative_root(tmp_path, monkeypatch):
    write_video(tmp_path / "clips/a.mp4", n=10)
    (tmp_path / "clips/train.csv").write_text("a.mp4,0\n")
    (tmp_path / "clips/other.csv").write_text("a.mp4,1\n")
    monkeypatch.chdir(tmp_path)
    assert video_folder("clips", **CLIP)[0]["label"] == 0
    assert video_folder("clips", annotation="other.csv", **CLIP)[0]["label"] == 1


@pytest.mark.parametrize(
    "override, message",
    [
        ("dataset.backend=ffmpeg", "dataset.backend takes one of auto, decord, pyav"),
        ("dataset.num_workers=-1", "dataset.num_workers takes an integer >= 0 or auto"),
        ("dataset.num_workers=many", "dataset.num_workers takes an integer >= 0 or auto"),
        ("dataset.decode_threads=-2", "dataset.decode_threads takes an integer >= 0"),
        ("dataset.prefetch_factor=0", "dataset.prefetch_factor takes an integer >= 1 or null"),
        ("dataset.pin_memory=sometimes", "dataset.pin_memory takes auto, true or false"),
        ("probe.stylize_on=gpu", "probe.stylize_on takes one of auto, device, loader"),
    ],
)
def test_bad_loading_settings_stop_with_one_line(compose, override, message):
    from stbias.validation import validate

    good = compose("model=i3d", "dataset=kinetics")
    bad = compose("model=i3d", "dataset=kinetics", override)
    validate(good)
    assert good.probe.num_workers == "auto"  # the probe's loader follows the dataset's
    with pytest.raises(StbiasError, match=re.escape(message)):
        validate(bad)
