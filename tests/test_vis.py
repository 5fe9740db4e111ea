"""Video instance segmentation: the VisTR family, its released weights, the VIS sets, the probe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from fixtures import released_vistr_state

import stbias.models
from stbias.data.vis_synthetic import SyntheticVIS, mask_boxes
from stbias.data.youtube_vis import YouTubeVIS, decode_rle
from stbias.errors import StbiasError
from stbias.models import create, pack_inputs, pooled_features
from stbias.models.vistr import VisTR
from stbias.runner import run_task

ROOT = Path(__file__).resolve().parents[1]
TINY = ["res2", "res3", "res4", "res5", "enc1", "enc2", "enc3", "dec1", "dec2", "dec3"]


def _clip(model, seed=0, batch=2):
    spec = model.stbias.spec
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, spec.frames, spec.size, spec.size, generator=g)
    return pack_inputs(x, spec)


# ---- the model ------------------------------------------------------------------------------


def test_vistr_family_is_registered_with_the_documented_aliases():
    assert stbias.models.list_models("vistr*") == ["vistr_r101", "vistr_r50", "vistr_tiny"]
    model = create("vistr_tiny")
    info = model.stbias
    assert list(info.layers) == TINY and info.layout == "channels_last"
    assert info.config["objective"] == "instance_segmentation"


def test_vistr_outputs_per_instance_logits_boxes_and_masks():
    torch.manual_seed(0)
    model = create("vistr_tiny").eval()
    x = _clip(model)
    with torch.no_grad():
        out = model(x)
    assert out["pred_logits"].shape == (2, 3, 11)  # 10 digits + "no object"
    assert out["pred_boxes"].shape == (2, 3, 8, 4)
    assert out["pred_masks"].shape == (2, 3, 8, 16, 16)  # H/4, W/4
    assert ((out["pred_boxes"] >= 0) & (out["pred_boxes"] <= 1)).all()
    # per instance, the mean of its frame queries' logits (query t * N + i: instance i, frame t)
    hs = {}
    handle = model.transformer.decoder.register_forward_hook(lambda m, a, o: hs.update(x=o))
    with torch.no_grad():
        model(x)
    handle.remove()
    per_query = model.class_embed(hs["x"]).reshape(2, 8, 3, 11)
    torch.testing.assert_close(out["pred_logits"], per_query.mean(1))
    # the batch is a batch: each clip's outputs do not depend on the other clip
    with torch.no_grad():
        alone = model(x[:1])
    for key in out:
        torch.testing.assert_close(alone[key], out[key][:1], atol=1e-4, rtol=1e-4)
    with pytest.raises(StbiasError, match="8-frame clips.*got 4 frames"):
        model(x[:, :, :4])


def test_dot_mask_head_masks_are_query_embeddings_dotted_with_pixel_features():
    torch.manual_seed(0)
    model = create("vistr_tiny").eval()
    head = model.dot_mask_head
    assert not hasattr(model, "mask_head")  # the released head is the real variants'
    x = _clip(model)
    seen = {}
    hooks = [
        model.transformer.decoder.register_forward_hook(lambda m, a, o: seen.update(hs=o)),
        head.fuse.register_forward_hook(lambda m, a, o: seen.update(pixel=o)),
    ]
    with torch.no_grad():
        out = model(x)
    for hook in hooks:
        hook.remove()
    embed = head.mask_embed(seen["hs"]).reshape(2, 8, 3, -1)  # query t * N + i
    pixel = seen["pixel"].reshape(2, 8, -1, 16, 16)
    b, i, t = 1, 2, 5
    expected = (embed[b, t, i][:, None, None] * pixel[b, t]).sum(0)
    torch.testing.assert_close(out["pred_masks"][b, i, t], expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(StbiasError, match="unknown VisTR mask_head 'fpn'; valid: vistr, dot"):
        VisTR(backbone="tiny", mask_head="fpn")


def test_vistr_r50_has_the_released_architecture():
    """Shapes the released vistr_r50.pth holds (hidden 384, 360 queries, 41 + 1 classes, the
    mask head's 384 + 8 -> 24 channels), under the released key names."""
    model = VisTR(backbone="resnet50", num_frames=36, num_instances=10, num_classes=41)
    released = released_vistr_state(model.state_dict())
    expected = {
        "vistr.backbone.0.body.conv1.weight": (64, 3, 7, 7),
        "vistr.backbone.0.body.layer4.2.bn3.running_var": (2048,),
        "vistr.input_proj.weight": (384, 2048, 1, 1),
        "vistr.query_embed.weight": (360, 384),
        "vistr.class_embed.weight": (42, 384),
        "vistr.bbox_embed.layers.2.weight": (4, 384),
        "vistr.transformer.encoder.layers.5.self_attn.in_proj_weight": (1152, 384),
        "vistr.transformer.encoder.layers.0.linear1.weight": (2048, 384),
        "vistr.transformer.decoder.layers.5.multihead_attn.out_proj.weight": (384, 384),
        "vistr.transformer.decoder.norm.weight": (384,),
        "bbox_attention.k_linear.weight": (384, 384),
        "mask_head.lay1.weight": (392, 392, 3, 3),
        "mask_head.adapter1.weight": (192, 1024, 1, 1),
        "mask_head.conv_offset.weight": (18, 48, 1, 1),
        "mask_head.dcn.weight": (24, 48, 3, 3),
        "insmask_head.0.weight": (12, 24, 3, 3, 3),
        "insmask_head.9.weight": (1, 12, 1, 1, 1),
    }
    for key, shape in expected.items():
        assert tuple(released[key].shape) == shape, key
    # frozen batch norm, as released: no num_batches_tracked, no classifier of the ResNet
    assert not [k for k in released if "num_batches_tracked" in k or ".fc." in k]
    assert not [k for k in released if "encoder.norm" in k]  # no norm after the encoder


def test_released_checkpoint_loads_through_model_checkpoint(tmp_path):
    torch.manual_seed(0)
    # the released mask head (vistr_tiny's own is the dot-product head) at tiny size
    ours = create("vistr_tiny", mask_head="vistr").state_dict()
    g = torch.Generator().manual_seed(1)
    state = {
        k: (torch.randn(v.shape, generator=g) if v.is_floating_point() else v + 3)
        for k, v in released_vistr_state(ours).items()
    }
    path = tmp_path / "vistr_tiny.pth"
    torch.save({"model": state, "epoch": 17}, path)  # the released files' container
    model = create("vistr_tiny", mask_head="vistr", checkpoint=str(path))
    loaded = model.state_dict()
    assert len(loaded) == len(state)
    for key, value in released_vistr_state(loaded).items():
        assert torch.equal(value, state[key]), key  # every tensor landed where it belongs
    assert model.stbias.weights == f"file:{path}"
    state.pop("mask_head.dcn.weight")
    torch.save({"model": state}, path)
    with pytest.raises(StbiasError, match=r"missing key.*mask_head\.dcn\.weight"):
        create("vistr_tiny", mask_head="vistr", checkpoint=str(path))


def test_without_temporal_encoding_pooled_features_ignore_frame_order():
    clip_order = torch.randperm(8, generator=torch.Generator().manual_seed(3))
    for temporal in (False, True):
        torch.manual_seed(0)
        model = create("vistr_tiny", temporal_encoding=temporal).eval()
        layers = model.stbias.layers
        x = _clip(model)
        with torch.no_grad():
            plain = pooled_features(model, layers, x, layout="channels_last")
            shuffled = pooled_features(model, layers, x[:, :, clip_order], layout="channels_last")
        for alias in TINY:
            same = torch.allclose(plain[alias], shuffled[alias], atol=1e-5)
            # the backbone is frame-wise either way; the transformer sees order only through t
            assert same == (alias.startswith("res") or not temporal), (temporal, alias)


# ---- the probe --------------------------------------------------------------------------------

PROBE = [
    "model=vistr_tiny",
    "dataset=vis_synthetic",
    "probe.num_clips=8",
    "probe.batch_size=4",
    "logger=none",
    "trainer.enable_progress_bar=false",
]


def test_vis_model_blind_to_frame_order_scores_no_dynamic_units(compose, tmp_path, monkeypatch):
    """The known answer of point 5: without the temporal encoding, shuffled frames give the
    same pooled features at every alias, so static scores are 1 and no unit is dynamic; with it
    the encoder and decoder see the shuffle."""
    scores = {}
    for temporal in ("false", "true"):
        folder = tmp_path / temporal
        folder.mkdir()
        monkeypatch.chdir(folder)
        cfg = compose(
            *PROBE,
            f"model.builder.temporal_encoding={temporal}",
            f"probe.cache_dir={tmp_path / 'cache'}",
            run_dir=folder,
        )
        record, _ = run_task(cfg)
        assert list(record["layers"]) == TINY
        with np.load(folder / "unit_scores.npz") as npz:
            scores[temporal] = {a: npz[f"{a}/static"] for a in TINY}
        if temporal == "false":
            for alias, entry in record["layers"].items():
                assert entry["units"]["dynamic"] == 0, alias
    for alias in TINY:
        deviation = {}
        for temporal, static in scores.items():
            live = static[alias] != 0  # dead units score 0
            deviation[temporal] = np.abs(static[alias][live] - 1.0).max()
        # float noise (about 1e-10) without the encoding and in the frame-wise backbone; the
        # encoder and decoder of the order-aware model move by 1e-4 and more
        assert deviation["false"] < 1e-6, alias
        seen = deviation["true"] > 1e-5
        assert seen == (not alias.startswith("res")), (alias, deviation)


def test_run_py_prints_the_layer_table_of_backbone_encoder_and_decoder(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *PROBE, "probe.num_clips=4"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "vistr_tiny has random weights" in output
    rows = [line.split()[0] for line in proc.stdout.splitlines() if line.split()[:1]]
    assert [r for r in rows if r in TINY] == TINY
    (results,) = tmp_path.glob("outputs/**/results.json")
    assert json.loads(results.read_text())["dataset"] == "vis_synthetic"


# ---- vis_synthetic -----------------------------------------------------------------------------


def test_vis_synthetic_instances_masks_and_labels():
    ds = SyntheticVIS("train", num_frames=6, size=48, num_samples=20)
    counts = set()
    for i in range(8):
        s = ds[i]
        video, masks = s["video"].numpy(), s["instance_masks"].numpy()
        labels, boxes = s["instance_labels"].numpy(), s["instance_boxes"].numpy()
        assert video.shape == (6, 48, 48, 3) and video.dtype == np.uint8
        assert masks.shape == (3, 6, 48, 48) and masks.dtype == bool
        n = int((labels >= 0).sum())
        counts.add(n)
        assert (labels[:n] >= 0).all() and (labels[:n] <= 9).all() and (labels[n:] == -1).all()
        assert not masks[n:].any()  # padding rows are empty
        assert (masks.sum(0) <= 1).all()  # an occluded digit loses the pixels
        np.testing.assert_array_equal(s["mask"].numpy(), masks.any(0))
        np.testing.assert_allclose(boxes, mask_boxes(masks))
        for k in range(n):
            # each instance is one colour, different from the other instances'
            colours = {tuple(c) for c in video[masks[k]]}
            assert len(colours) == 1
            assert masks[k].any(axis=(1, 2)).sum() >= 5  # visible in (almost) every frame
            ys, xs = np.nonzero(masks[k, 0])
            assert boxes[k, 0, 2] == pytest.approx((xs.max() + 1 - xs.min()) / 48)
        # the digits move
        centres = [np.argwhere(masks[0, t]).mean(0) for t in (0, 5) if masks[0, t].any()]
        assert len(centres) < 2 or np.abs(centres[0] - centres[1]).max() > 0.5
    assert counts == {2, 3}


def test_vis_synthetic_is_deterministic_per_seed_split_and_index():
    a = SyntheticVIS("train", num_frames=4, size=32, num_samples=5)
    b = SyntheticVIS("train", num_frames=4, size=32, num_samples=5)
    for key in ("video", "instance_masks", "instance_labels"):
        assert torch.equal(a[2][key], b[2][key])
    assert not torch.equal(a[2]["video"], a[3]["video"])
    other_seed = SyntheticVIS("train", num_frames=4, size=32, num_samples=5, seed=1)
    val = SyntheticVIS("val", num_frames=4, size=32, num_samples=5)
    assert not torch.equal(a[2]["video"], other_seed[2]["video"])
    assert not torch.equal(a[2]["video"], val[2]["video"])
    with pytest.raises(StbiasError, match="unknown split 'dev'; valid: train, val, test"):
        SyntheticVIS("dev")
    with pytest.raises(StbiasError, match="max_instances=2 is below"):
        SyntheticVIS(max_instances=2)


def test_vis_synthetic_stroke_thickens_each_digit_around_its_own_strokes():
    thin = SyntheticVIS("train", num_frames=4, size=48, num_samples=4)
    thick = SyntheticVIS("train", num_frames=4, size=48, num_samples=4, stroke=1)
    a, b = thin[1], thick[1]
    torch.testing.assert_close(a["instance_labels"], b["instance_labels"])  # the same draws
    # the last digit is drawn on top: its thick mask is its thin mask dilated by 3x3
    n = int((a["instance_labels"] >= 0).sum()) - 1
    for t in range(4):
        m = a["instance_masks"][n, t].numpy().astype(np.uint8)
        dilated = cv2.dilate(m, np.ones((3, 3), np.uint8)) > 0
        np.testing.assert_array_equal(b["instance_masks"][n, t].numpy(), dilated)
    with pytest.raises(StbiasError, match="stroke must be a whole number of pixels >= 0; got -1"):
        SyntheticVIS(stroke=-1)


# ---- youtube_vis -----------------------------------------------------------------------------


def _rle_string(counts):
    """COCO's compressed RLE string of run lengths (pycocotools' rleToString)."""
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr((c | 0x20 if more else c) + 48))
    return "".join(out)


def test_rle_decoding_of_counts_lists_and_compressed_strings():
    rng = np.random.default_rng(0)
    for h, w in ((5, 7), (40, 56)):
        mask = rng.random((h, w)) < 0.3
        mask[: h // 2, : w // 3] = True  # long runs: multi-character string entries
        counts = _runs(mask)
        assert sum(counts) == h * w
        np.testing.assert_array_equal(decode_rle({"size": [h, w], "counts": counts}), mask)
        text = _rle_string(counts)
        np.testing.assert_array_equal(decode_rle({"size": [h, w], "counts": text}), mask)
    # a hand-worked mask: column-major runs 1 background, 2 foreground, 3 background
    expected = np.array([[0, 1, 0], [1, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(decode_rle({"size": [2, 3], "counts": [1, 2, 3]}), expected)
    with pytest.raises(StbiasError, match="cover 5 pixels"):
        decode_rle({"size": [2, 3], "counts": [1, 2, 2]})


def _runs(mask):
    flat = mask.T.reshape(-1)
    runs, value, length = [], False, 0
    for v in flat:
        if v == value:
            length += 1
        else:
            runs.append(length)
            value, length = v, 1
    runs.append(length)
    return runs


def _write_youtube_vis(root, split="train", annotations_at="2021"):
    """Two videos in the released layout: 40x56 JPEG frames and RLE masks of rectangles."""
    h, w = 40, 56
    videos, anns, truth = [], [], {}
    for vid, (name, frames) in enumerate((("0a1b2c3d4e", 5), ("ffee001122", 3)), start=1):
        folder = root / split / "JPEGImages" / name
        folder.mkdir(parents=True)
        names = []
        for t in range(frames):
            image = np.full((h, w, 3), 40 * t, dtype=np.uint8)
            cv2.imwrite(str(folder / f"{5 * t:05d}.jpg"), image)
            names.append(f"{name}/{5 * t:05d}.jpg")
        videos.append({"id": vid, "height": h, "width": w, "length": frames, "file_names": names})
        for k, (category, top, size) in enumerate(((7, 4, 10), (23, 20, 16))):
            segs, masks = [], []
            for t in range(frames):
                mask = np.zeros((h, w), dtype=bool)
                if not (vid == 1 and k == 1 and t == 2):  # absent in one frame: null
                    mask[top : top + size, 10 + 3 * t : 10 + 3 * t + size] = True
                masks.append(mask)
                counts = _runs(mask)
                rle = {"size": [h, w], "counts": _rle_string(counts) if k else counts}
                segs.append(rle if mask.any() else None)
            anns.append(
                {"id": len(anns) + 1, "video_id": vid, "category_id": category, "iscrowd": 0}
                | {"segmentations": segs, "bboxes": [None] * frames, "areas": [None] * frames}
            )
            truth[(vid, k)] = np.stack(masks)
    categories = [{"id": i, "name": f"class{i}", "supercategory": "object"} for i in range(1, 41)]
    data = {"videos": videos, "annotations": anns, "categories": categories, "info": {}}
    path = root / split / "instances.json" if annotations_at == "2021" else root / f"{split}.json"
    path.write_text(json.dumps(data))
    return truth


@pytest.mark.parametrize("release", ["2021", "2019"])
def test_youtube_vis_reads_the_released_layout(tmp_path, release):
    truth = _write_youtube_vis(tmp_path, annotations_at=release)
    ds = YouTubeVIS(str(tmp_path), "train", num_frames=3, size=40, max_instances=4)
    assert len(ds) == 2 and ds.num_classes == 41 and ds.categories[23] == "class23"
    s = ds[0]
    assert s["id"] == "0a1b2c3d4e" and s["video"].shape == (3, 40, 40, 3)
    picked = s["frame_indices"].numpy()
    np.testing.assert_array_equal(picked, [1, 2, 3])  # the centred span of 3 of 5 frames
    # frame t is grey 40 t (JPEG: about); centre crop of the 56-wide frame: columns 8..47
    assert abs(float(s["video"][0].float().mean()) - 40) < 3
    masks, labels = s["instance_masks"].numpy(), s["instance_labels"].numpy()
    assert labels.tolist() == [7, 23, -1, -1]
    for k in (0, 1):
        np.testing.assert_array_equal(masks[k], truth[(1, k)][picked][:, :, 8:48])
    assert not masks[1, 1].any()  # the null segmentation of frame 2
    assert not masks[2:].any()
    short = ds[1]  # 3 frames, looped as needed
    assert short["video"].shape == (3, 40, 40, 3) and short["id"] == "ffee001122"
    np.testing.assert_array_equal(short["instance_masks"][1].numpy(), truth[(2, 1)][:, :, 8:48])
    few = YouTubeVIS(str(tmp_path), "train", num_frames=2, size=20, max_instances=1)
    assert few[0]["instance_labels"].tolist() == [23]  # the larger instance is kept
    assert few[0]["video"].shape == (2, 20, 20, 3)


def test_youtube_vis_missing_files_stop_with_one_line(tmp_path):
    with pytest.raises(StbiasError, match="dataset.root is not set"):
        YouTubeVIS(None)
    missing = tmp_path / "nowhere"
    with pytest.raises(StbiasError, match=f"root '{missing}' not found") as info:
        YouTubeVIS(str(missing))
    assert "\n" not in str(info.value)
    (tmp_path / "valid" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(StbiasError, match=r"no annotation file .*valid/instances\.json"):
        YouTubeVIS(str(tmp_path), "val")
    with pytest.raises(StbiasError, match="unknown youtube_vis split 'dev'"):
        YouTubeVIS(str(tmp_path), "dev")
