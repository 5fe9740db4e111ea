"""Two-stream video object segmentation: input packing, flow-jitter pairs, the twostream_seg family,
VOS data, segmentation training and J, center bias, the cross-connection study and its figures."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from stbias.data import SyntheticVOS, davis, imagenet_vid, tao_vos
from stbias.data.flow import farneback_flow, flow_to_image, rgb_to_hsv, two_stream_input
from stbias.errors import StbiasError
from stbias.metrics.segmentation import (
    CenterBias,
    RegionSimilarity,
    frame_region_similarity,
    segmentation_loss,
)
from stbias.models.inputs import InputSpec, check_pair_input, pack_inputs
from stbias.models.taps import LayerTap
from stbias.models.twostream import twostream_seg
from stbias.plotting.vos import center_bias_maps, fig4, fig7, table1_markdown, table1_rows
from stbias.runner import run_task
from stbias.stylization import PairSampler, TextureStylizer, hsv_to_rgb, make_flow_pair_views
from stbias.tasks.model_setup import build_model

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SPEC = InputSpec(frames=2, size=32, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), flow=True)
QUIET = ["logger=none", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
TINY = ["model=twostream_seg_tiny", "model.input.size=32", *QUIET]


@pytest.fixture(scope="module")
def texture():
    return TextureStylizer(styles=["china", "flower", "coffee", "ihc"])


def moving_clips(batch: int = 2, frames: int = 2, size: int = 32) -> torch.Tensor:
    """Clips of a textured square moving right by 2 pixels a frame over a textured background."""
    rng = np.random.default_rng(0)
    background = rng.random((3, size, size)).astype(np.float32)
    square = rng.random((3, 10, 10)).astype(np.float32)
    out = np.repeat(background[None, :, None], batch, 0).repeat(frames, 2)
    for t in range(frames):
        out[:, :, t, 8:18, 6 + 2 * t : 16 + 2 * t] = square
    return torch.from_numpy(out)


# --- input packing and flow-jitter pairs --------------------------------------------------------


def test_pack_inputs_normalises_both_streams():
    rgb, flow = torch.rand(2, 3, 1, 32, 32), torch.rand(2, 3, 1, 32, 32)
    x_rgb, x_flow = pack_inputs([rgb, flow], SPEC)
    mean, std = (
        torch.tensor(SPEC.mean).view(1, 3, 1, 1, 1),
        torch.tensor(SPEC.std).view(1, 3, 1, 1, 1),
    )
    fmean = torch.tensor(SPEC.flow_mean).view(1, 3, 1, 1, 1)
    fstd = torch.tensor(SPEC.flow_std).view(1, 3, 1, 1, 1)
    torch.testing.assert_close(x_rgb, (rgb - mean) / std)
    torch.testing.assert_close(x_flow, (flow - fmean) / fstd)
    # one clip: the data-side transform gives frames 0 .. T-2 and the Farneback flow image of
    # t -> t + 1; packing itself computes no flow
    clip = moving_clips(frames=3)
    with pytest.raises(StbiasError, match=r"takes \[rgb, flow image\], not one clip"):
        pack_inputs(clip, SPEC)
    x_rgb, x_flow = pack_inputs(two_stream_input(clip), SPEC)
    torch.testing.assert_close(x_rgb, (clip[:, :, :-1] - mean) / std)
    torch.testing.assert_close(x_flow, (flow_to_image(farneback_flow(clip)) - fmean) / fstd)


def test_flow_jitter_pairs_keep_rgb_static_and_flow_dynamic_after_packing(texture):
    clip = moving_clips(batch=3, frames=3)
    sampler = PairSampler(texture, seed=2, two_stream=True)
    raw = sampler(clip, [0, 1, 2])
    views = {name: pack_inputs(raw[name], SPEC) for name in ("anchor", "static", "dynamic")}
    # static pair: identical RGB input, jittered flow; dynamic pair: identical flow, new style
    assert torch.equal(views["static"][0], views["anchor"][0])
    assert not torch.equal(views["static"][1], views["anchor"][1])
    assert torch.equal(views["dynamic"][1], views["anchor"][1])
    assert not torch.equal(views["dynamic"][0], views["anchor"][0])
    for name in ("anchor", "static", "dynamic"):  # float [rgb, flow image] views: one way
        assert all(0 <= float(p.min()) and float(p.max()) <= 1 for p in raw[name])


def test_precomputed_flow_images_are_jittered_like_computed_flow(texture):
    clip = moving_clips(frames=3)
    computed = make_flow_pair_views(clip, texture, [4, 5], seed=1)
    read = make_flow_pair_views(clip, texture, [4, 5], seed=1, flow_image=computed["anchor"][1])
    for name in ("anchor", "static", "dynamic"):
        for a, b in zip(read[name], computed[name]):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    hsv = torch.rand(3, 1, 4, 4, 4)
    hue, sat, val = rgb_to_hsv(hsv_to_rgb(hsv[0:1], hsv[1:2], hsv[2:3]))
    torch.testing.assert_close(torch.cat([hue, sat, val]), hsv, atol=1e-5, rtol=0)


def test_one_clip_models_and_slowfast_refuse_two_stream_pairs(compose, tmp_path):
    single, slowfast = InputSpec(), InputSpec(frames=8, pathways=2, alpha=4)
    for spec, words in ((single, "takes one RGB clip"), (slowfast, "[slow, fast]")):
        with pytest.raises(StbiasError, match="stylization.two_stream=true") as err:
            check_pair_input(spec, True, "model m")
        assert words in str(err.value) and "\n" not in str(err.value)
        with pytest.raises(StbiasError, match="two-stream"):
            pack_inputs([torch.rand(1, 3, 2, 8, 8)] * 2, spec)
    with pytest.raises(StbiasError, match="flow-jitter pairs"):
        check_pair_input(SPEC, False, "model m")
    for model in ("i3d_tiny", "slowfast_tiny"):
        cfg = compose(
            f"model={model}", "stylization.two_stream=true", *QUIET, run_dir=tmp_path / "run"
        )
        with pytest.raises(StbiasError, match="does not fit") as err:
            run_task(cfg)
        assert "\n" not in str(err.value)
    # by default the pairs follow the model: flow-jitter pairs for a two-stream model only
    assert compose(*TINY, run_dir=tmp_path / "run").stylization.two_stream is True
    assert compose("model=i3d_tiny", run_dir=tmp_path / "run").stylization.two_stream is False


# --- the twostream_seg family -------------------------------------------------------------------


def _tap_outputs(model, views):
    layers = {f"{s}_res{k}": f"{s}_taps.{k - 2}" for s in ("app", "mot") for k in (2, 3, 4, 5)}
    out = {}
    for name, x in views.items():
        with torch.no_grad(), LayerTap(model, layers) as tap:
            model(x)
        out[name] = tap.outputs
    return out


@pytest.mark.parametrize(
    "cross,app_sees_motion,mot_sees_appearance",
    [
        ("none", False, False),
        ("motion_to_appearance", True, False),
        ("appearance_to_motion", False, True),
        ("bidirectional", True, True),
    ],
)
def test_cross_connections_decide_which_stream_sees_the_other(
    texture, cross, app_sees_motion, mot_sees_appearance
):
    torch.manual_seed(0)
    model = twostream_seg(backbone="test_resnet", cross=cross, decoder_channels=8).eval()
    raw = PairSampler(texture, seed=0, two_stream=True)(moving_clips(batch=2, size=64), [0, 1])
    views = {name: pack_inputs(raw[name], SPEC) for name in ("anchor", "static", "dynamic")}
    feats = _tap_outputs(model, {n: views[n] for n in ("anchor", "static", "dynamic")})
    for k in (2, 3, 4, 5):
        # the static pair differs only in the flow, the dynamic pair only in the RGB frame
        same_app = torch.equal(feats["anchor"][f"app_res{k}"], feats["static"][f"app_res{k}"])
        same_mot = torch.equal(feats["anchor"][f"mot_res{k}"], feats["dynamic"][f"mot_res{k}"])
        assert same_app is not app_sees_motion, (cross, k)
        assert same_mot is not mot_sees_appearance, (cross, k)
    logits = model(views["anchor"])
    assert logits.shape == (2, 1, 1, 64, 64)


def test_model_yaml_taps_and_clip_layout():
    cfg = OmegaConf.load(CONF / "model" / "twostream_seg.yaml")
    assert (
        set(cfg.layers)
        == {f"{s}{k}" for s in ("app_res", "mot_res", "fusion") for k in (2, 3, 4, 5)}
        == set(cfg.channels)
    )
    torch.manual_seed(0)
    model = twostream_seg(backbone="test_resnet", fusion_stages=[2, 5], decoder_channels=8).eval()
    assert set(model.channels) == {f"{s}_res{k}" for s in ("app", "mot") for k in (2, 3, 4, 5)} | {
        "fusion2",
        "fusion5",
    }
    x = [torch.randn(3, 3, 4, 32, 32), torch.randn(3, 3, 4, 32, 32)]
    with torch.no_grad(), LayerTap(model, {"f2": "fusion_taps.res2", "a3": "app_taps.1"}) as tap:
        logits = model(x)
    with torch.no_grad():
        frame = model([x[0][:, :, 2], x[1][:, :, 2]])  # one frame: (B, 3, H, W)
    assert logits.shape == (3, 1, 4, 32, 32) and frame.shape == (3, 1, 32, 32)
    torch.testing.assert_close(logits[:, :, 2], frame, atol=1e-5, rtol=1e-4)  # frames independent
    assert tap.outputs["f2"].shape == (3, 32, 4, 8, 8) and tap.outputs["a3"].shape[:3] == (3, 48, 4)
    # any timm CNN with stride 4, 8, 16 and 32 maps, nested modules too (checked against its own
    # forward when built); a ViT has none at stride 4
    other = twostream_seg(backbone="test_efficientnet", motion_backbone="test_resnet").eval()
    assert other([torch.randn(1, 3, 32, 32)] * 2).shape == (1, 1, 32, 32)
    assert other.channels["app_res2"] != other.channels["mot_res2"]
    with pytest.raises(StbiasError, match="strides"):
        twostream_seg(backbone="test_vit")
    with pytest.raises(StbiasError, match="unknown cross connection 'sideways'"):
        twostream_seg(backbone="test_resnet", cross="sideways")
    with pytest.raises(StbiasError, match="fusion_stages"):
        twostream_seg(backbone="test_resnet", fusion_stages=[1, 6])


def test_pretrained_backbone_from_a_local_file_and_offline_hint(compose, tmp_path, monkeypatch):
    import safetensors.torch
    import timm

    torch.manual_seed(1)
    reference = timm.create_model("test_resnet")  # a classifier: fc.* keys are dropped on load
    state = reference.state_dict()
    torch.save(state, tmp_path / "w.pth")
    safetensors.torch.save_file(state, str(tmp_path / "w.safetensors"))
    for name in ("w.pth", "w.safetensors"):
        model = twostream_seg(
            backbone="test_resnet", pretrained=True, backbone_weights=str(tmp_path / name)
        )
        for stream in (model.appearance, model.motion):
            assert torch.equal(next(stream.stages[0].parameters()), state["conv1.0.weight"])
    cfg = compose(
        "model=twostream_seg_tiny",
        "model.pretrained=true",
        f"model.backbone_weights={tmp_path / 'w.pth'}",
        run_dir=tmp_path / "run",
    )
    assert torch.equal(
        build_model(cfg.model).motion.stages[3][-1][0].conv1.weight, state["layer4.0.conv1.weight"]
    )

    def offline(*args, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("no network")
        return create(*args, **kwargs)

    create = timm.create_model
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(StbiasError, match="model.backbone_weights=/path/to/model.safetensors"):
        twostream_seg(backbone="test_resnet", pretrained=True)
    with pytest.raises(StbiasError, match="set model.pretrained=true"):
        twostream_seg(backbone="test_resnet", backbone_weights=str(tmp_path / "w.pth"))


# --- data ---------------------------------------------------------------------------------------


def test_synthetic_vos_objects_masks_and_motion():
    camo = SyntheticVOS("camouflage", num_frames=3, size=64, num_samples=40)
    sal = SyntheticVOS("salient", num_frames=3, size=64, num_samples=40, seed=0)
    assert torch.equal(camo[7]["video"], camo[7]["video"])  # generated deterministically
    assert not torch.equal(
        camo[7]["video"], SyntheticVOS("camouflage", "val", num_frames=3)[7]["video"]
    )
    contrast = {}
    for ds in (camo, sal):
        gaps = []
        for i in range(len(ds)):
            s = ds[i]
            video, mask = s["video"].float(), s["mask"].bool()
            assert s["label"] == i and s["mask"].dtype == torch.uint8 and mask.any()
            changed = (video[1] - video[0]).abs().sum(-1) > 0
            if s["moving"]:
                # pixels change only where the object is, was or went
                assert not changed[~(mask[0] | mask[1])].any()
            else:
                assert not changed.any() and torch.equal(mask[0], mask[1])
            ring = (
                torch.from_numpy(
                    cv2.dilate(mask[0].numpy().astype(np.uint8), np.ones((9, 9), np.uint8))
                ).bool()
                & ~mask[0]
            )
            luma = video[0] @ torch.tensor([0.299, 0.587, 0.114])
            gaps.append(float((luma[mask[0]].mean() - luma[ring].mean()).abs()))
        contrast[ds.kind] = np.median(gaps)
    assert all(camo[i]["moving"] for i in range(len(camo)))
    assert 0 < sum(sal[i]["moving"] for i in range(len(sal))) < len(sal)
    # a camouflaged object looks like its surroundings; a salient one does not
    assert contrast["camouflage"] < 15 < 40 < contrast["salient"], contrast
    with pytest.raises(StbiasError, match="placement 'left'"):
        SyntheticVOS("salient", placement="left")


def _write_frames(folder: Path, names, size=(24, 32), value=None):
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        image = np.full((*size, 3), 20 * k if value is None else value, np.uint8)
        cv2.imwrite(str(folder / name), image)


def test_davis_reads_flow_images_beside_frames_and_masks(tmp_path):
    (tmp_path / "ImageSets/2016").mkdir(parents=True)
    (tmp_path / "ImageSets/2016/val.txt").write_text("bear\n")
    names = [f"{t:05d}" for t in range(6)]
    _write_frames(tmp_path / "JPEGImages/480p/bear", [n + ".jpg" for n in names])
    _write_frames(tmp_path / "Annotations/480p/bear", [n + ".png" for n in names], value=255)
    # flow images named after the frame they start from, the last frame has none
    flow = tmp_path / "Flow/480p/bear"
    flow.mkdir(parents=True)
    for t in range(5):
        cv2.imwrite(
            str(flow / f"{names[t]}.png"), np.full((24, 32, 3), (10 * t, 50, 200), np.uint8)
        )
    ds = davis(str(tmp_path), "val", flow_dir="Flow/480p", num_frames=3, sampling_rate=2, size=16)
    s = ds[0]
    assert s["video"].shape == (3, 16, 16, 3) and s["mask"].shape == (3, 16, 16)
    assert s["flow"].shape == (2, 16, 16, 3)
    starts = s["frame_indices"][:-1].tolist()
    assert s["flow"][:, 0, 0, 2].tolist() == [10 * t for t in starts]  # BGR files read as RGB
    assert "flow" not in davis(str(tmp_path), "val", num_frames=3, size=16)[0]
    # center bias reads every mask file at its own size (here all foreground): spread evenly
    from stbias.tasks.center_bias import center_bias

    whole = center_bias(ds, size=8)
    assert whole["masks"] == 6 and whole["center_mass"] == pytest.approx(0.25)
    with pytest.raises(StbiasError, match="flow_dir='Nope'"):
        davis(str(tmp_path), "val", flow_dir="Nope")
    (tmp_path / "ImageSets/2016/val.txt").write_text("bear\ncat\n")
    _write_frames(tmp_path / "JPEGImages/480p/cat", ["00000.jpg"])
    with pytest.raises(StbiasError, match="no flow images for 1 video"):
        davis(str(tmp_path), "val", flow_dir="Flow/480p")


def test_tao_vos_reader_instances_to_foreground_and_sparse_masks(tmp_path):
    base = tmp_path / "valid"
    videos = ["ArgoVerse/a1", "LaSOT/b2"]
    (base).mkdir(parents=True)
    (base / "meta.json").write_text(json.dumps({"videos": {v: {"objects": {}} for v in videos}}))
    for v in videos:
        _write_frames(base / "JPEGImages" / v, [f"{t:05d}.jpg" for t in range(4)])
        ann = base / "Annotations" / v
        ann.mkdir(parents=True)
        mask = np.zeros((24, 32), np.uint8)
        mask[2:6, 3:9], mask[10:12, 20:30] = 1, 2  # two instances
        cv2.imwrite(str(ann / "00002.png"), mask)  # only frame 2 is annotated
    ds = tao_vos(str(tmp_path), "val", num_frames=4, sampling_rate=1, size=None, temporal="centre")
    assert len(ds) == 2 and ds[1]["id"] == "LaSOT/b2" and ds[1]["label"] == 1
    m = ds[0]["mask"]
    assert (m[[0, 1, 3]] == 255).all()  # not annotated
    assert int(m[2].sum()) == 4 * 6 + 2 * 10 and set(m[2].unique().tolist()) == {0, 1}
    masks = list(ds.iter_masks())
    assert len(masks) == 2 and int(masks[0].sum()) == 44
    with pytest.raises(StbiasError, match="JPEGImages"):
        tao_vos(str(tmp_path), "train")


def test_imagenet_vid_reader_box_masks_or_pixel_masks(tmp_path):
    snippet = "ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000"
    _write_frames(tmp_path / "Data/VID/train" / snippet, [f"{t:06d}.JPEG" for t in range(3)])
    ann = tmp_path / "Annotations/VID/train" / snippet
    ann.mkdir(parents=True)
    for t in range(3):
        boxes = "".join(
            f"<object><trackid>{i}</trackid><name>n0</name><bndbox><xmax>{x1}</xmax>"
            f"<xmin>{x0}</xmin><ymax>{y1}</ymax><ymin>{y0}</ymin></bndbox></object>"
            for i, (x0, y0, x1, y1) in enumerate([(2 + t, 3, 11 + t, 7), (20, 10, 24, 19)])
        )
        (ann / f"{t:06d}.xml").write_text(
            f"<annotation><size><width>32</width><height>24</height></size>{boxes}</annotation>"
        )
    ds = imagenet_vid(str(tmp_path), "train", num_frames=3, size=None)
    s = ds[0]
    assert s["id"] == snippet and s["mask"].shape == (3, 24, 32)
    assert [int(m.sum()) for m in s["mask"]] == [10 * 5 + 5 * 10] * 3
    assert s["mask"][1, 3, 3] == 1 and s["mask"][1, 3, 2] == 0  # the first box moved right
    pixel = tmp_path / "weak" / snippet
    pixel.mkdir(parents=True)
    cv2.imwrite(str(pixel / "000001.png"), np.full((24, 32), 255, np.uint8))
    weak = imagenet_vid(
        str(tmp_path), "train", mask_root=str(tmp_path / "weak"), num_frames=3, size=None
    )
    assert (weak[0]["mask"][1] == 1).all() and (weak[0]["mask"][[0, 2]] == 255).all()
    with pytest.raises(StbiasError, match="Data/VID/val"):
        imagenet_vid(str(tmp_path), "val")


# --- J, losses, center bias ---------------------------------------------------------------------


def test_region_similarity_known_answers():
    target = torch.zeros(4, 4, 4, dtype=torch.uint8)
    pred = torch.zeros(4, 4, 4, dtype=torch.bool)
    target[0, :2] = 1
    pred[0, :1] = True  # J = 4 / 8
    target[1, :, :2] = 1
    pred[1, :, 1:3] = True  # J = 4 / 12
    # frame 2: both empty -> 1; frame 3: nothing annotated -> not counted
    target[3] = 255
    j, annotated = frame_region_similarity(pred, target)
    torch.testing.assert_close(j[:3], torch.tensor([0.5, 1 / 3, 1.0], dtype=torch.float64))
    assert annotated.tolist() == [True, True, True, False]
    # pixels marked 255 count nowhere: the prediction there is neither right nor wrong
    target2 = target[0:1].clone()
    target2[0, 3] = 255
    pred2 = pred[0:1].clone()
    pred2[0, 3] = True
    assert float(frame_region_similarity(pred2, target2)[0]) == 0.5
    metric = RegionSimilarity()
    logits = torch.where(pred, 5.0, -5.0).view(2, 2, 4, 4)
    metric.update(logits, target.view(2, 2, 4, 4), torch.tensor([7, 9]))
    assert metric.per_sequence() == pytest.approx({7: (0.5 + 1 / 3) / 2, 9: 1.0})
    out = metric.compute()
    assert float(out["J"]) == pytest.approx(((0.5 + 1 / 3) / 2 + 1.0) / 2)
    assert float(out["J_frames"]) == pytest.approx((0.5 + 1 / 3 + 1.0) / 3)


def test_segmentation_loss_ignores_unannotated_pixels():
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 1, 8, 8, requires_grad=True)
    target = (torch.rand(2, 1, 1, 8, 8) > 0.5).to(torch.uint8)
    loss, parts = segmentation_loss(logits, target)
    p = torch.sigmoid(logits).detach()
    g = target.float()
    bce = torch.nn.functional.binary_cross_entropy(p, g)
    iou = 1 - ((p * g).flatten(1).sum(1) + 1) / ((p + g - p * g).flatten(1).sum(1) + 1)
    assert float(parts["bce"]) == pytest.approx(float(bce), rel=1e-5)
    assert float(parts["iou"]) == pytest.approx(float(iou.mean()), rel=1e-5)
    masked = target.clone()
    masked[0] = 255
    loss, _ = segmentation_loss(logits, masked)
    loss.backward()
    assert float(logits.grad[0].abs().sum()) == 0 and float(logits.grad[1].abs().sum()) > 0
    assert float(segmentation_loss(logits.detach(), torch.full_like(target, 255))[0]) == 0


def test_center_bias_known_answers():
    uniform = CenterBias(8)
    uniform.update(np.ones((3, 16, 16), np.uint8))
    out = uniform.compute()
    assert out["center_mass"] == pytest.approx(0.25) and out["masks"] == 3
    np.testing.assert_allclose(out["map"], 1.0)
    centred = CenterBias(8)
    block = np.zeros((16, 16), np.uint8)
    block[4:12, 4:12] = 1
    centred.update(block)
    centred.update(np.full((16, 16), 255, np.uint8))  # not annotated: skipped
    out = centred.compute()
    assert out["center_mass"] == pytest.approx(1.0) and out["skipped"] == 1
    assert out["mean_map"].max() == 1.0 and out["mean_map"][0, 0] == 0
    half = CenterBias(8)
    half.update(block)
    half.update(np.zeros((16, 16), np.uint8))
    assert half.compute()["mean_map"].max() == 0.5 and half.compute()["map"].max() == 1.0
    with pytest.raises(StbiasError, match="no foreground"):
        empty = CenterBias(8)
        empty.update(np.zeros((4, 4), np.uint8))
        empty.compute()


def test_center_bias_task_side_by_side(compose, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = compose(
        "task=center_bias",
        "task.datasets=[camouflage,salient]",
        "probe.num_clips=200",
        "task.size=32",
        *TINY,
        run_dir=tmp_path / "run",
    )
    record, objects = run_task(cfg)
    numbers = record["datasets"]
    assert numbers["salient"]["center_mass"] > 0.6 > 0.35 > numbers["camouflage"]["center_mass"]
    with np.load(tmp_path / "run" / "center_bias.npz") as npz:
        assert npz["salient/map"].shape == (32, 32) and npz["salient/map"].max() == 1.0
    assert json.loads((tmp_path / "run" / "results.json").read_text())["size"] == 32
    assert (tmp_path / "run" / "center_bias.png").stat().st_size > 5000


# --- training, probing, the study ---------------------------------------------------------------


def test_probe_finds_the_motion_stream_dynamic_and_the_appearance_stream_static(compose, tmp_path):
    cfg = compose(
        *TINY,
        "dataset=camouflage",
        "dataset.split=val",
        "probe.num_clips=12",
        "probe.batch_size=6",
        f"probe.cache_dir={tmp_path / 'cache'}",
        run_dir=tmp_path / "run",
    )
    record, _ = run_task(cfg)
    with np.load(tmp_path / "run" / "unit_scores.npz") as npz:
        for k in (2, 3, 4, 5):
            app, mot = record["layers"][f"app_res{k}"], record["layers"][f"mot_res{k}"]
            # cross=none: the appearance stream never sees the flow, the motion stream never the
            # RGB frame, so their units correlate perfectly on static / dynamic pairs
            live = npz[f"app_res{k}/static"] != 0
            np.testing.assert_allclose(npz[f"app_res{k}/static"][live], 1.0, atol=1e-4)
            live = npz[f"mot_res{k}/dynamic"] != 0
            np.testing.assert_allclose(npz[f"mot_res{k}/dynamic"][live], 1.0, atol=1e-4)
            assert app["units"]["dynamic"] == 0 and mot["units"]["static"] == 0
            assert app["scores"]["static"] > app["scores"]["dynamic"]
            assert mot["scores"]["dynamic"] > mot["scores"]["static"]
    assert set(record["layers"]) >= {"fusion2", "fusion5"}


def _train_cfg(compose, tmp_path, *overrides):
    return compose(
        "task=train",
        *TINY,
        "dataset=salient",
        "dataset.num_samples=32",
        "train.val_clips=12",
        "train.batch_size=8",
        "trainer.max_epochs=1",
        "trainer.num_sanity_val_steps=0",
        *overrides,
        run_dir=tmp_path / "run",
    )


@pytest.mark.slow
def test_segmentation_training_reports_j_per_sequence_and_checkpoints(
    compose, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    record, objects = run_task(_train_cfg(compose, tmp_path, "train.optimizer.lr=0.01"))
    assert record["objective"] == "segmentation" and 0 <= record["val/J"] <= 1
    assert set(record["best"]) == {"val/J"} and Path(record["checkpoint"]).is_file()
    per_seq = record["J_per_sequence"]
    assert len(per_seq) == 12 and set(per_seq) == {f"salient_val_{i}" for i in range(12)}
    assert record["val/J"] == pytest.approx(np.mean(list(per_seq.values())), abs=1e-6)
    stored = json.loads((tmp_path / "run" / "results.json").read_text())
    assert stored["val/J"] == record["val/J"] and "num_classes" not in stored
    # the module's val/J is the J of its predictions, recomputed here from the masks
    module, data = objects["module"].eval(), objects["data"]
    metric = RegionSimilarity()
    with torch.no_grad():
        for batch in data.val_dataloader():
            logits = module(module.model_inputs(batch))
            metric.update(logits, module.targets(batch, logits), batch["label"])
    assert float(metric.compute()["J"]) == pytest.approx(record["val/J"], abs=1e-5)
    # the checkpoint rebuilds the network for a probe (flow input included)
    cfg = compose(*TINY, f"model.checkpoint={record['checkpoint']}", run_dir=tmp_path / "run")
    model = build_model(cfg.model)
    state = torch.load(record["checkpoint"], weights_only=True)["state_dict"]
    assert torch.equal(model.head.weight, state["model.head.weight"])
    with pytest.raises(StbiasError, match="train.shuffle_frames apply to classifiers"):
        run_task(_train_cfg(compose, tmp_path, "train.shuffle_frames=true"))
    with pytest.raises(StbiasError, match="no 'mask'"):
        run_task(_train_cfg(compose, tmp_path, "dataset=pfm", "dataset.num_samples=8"))


# --- figures ------------------------------------------------------------------------------------


def _layers(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for alias in [f"{s}{k}" for s in ("mot_res", "app_res", "fusion") for k in (2, 3, 4, 5)]:
        dyn, stat = rng.uniform(0, 50, size=2)
        units = rng.integers(0, 20, size=4)
        out[alias] = {
            "percent": {"dynamic": dyn, "static": stat, "residual": 100 - dyn - stat},
            "units": dict(zip(("dynamic", "static", "joint", "residual"), units.tolist())),
        }
    return out


def test_vos_figures_draw_the_given_numbers(tmp_path):
    results = {"none": _layers(0), "both": _layers(1)}
    fig = fig4(results, unit_layer="fusion5")
    panels = fig.axes
    assert len(panels) == 2 * 3 + 1
    motion_none = [p.get_height() for p in panels[0].patches]
    want = [
        results["none"][f"mot_res{k}"]["percent"][c]
        for k in (2, 3, 4, 5)
        for c in ("dynamic", "static", "residual")
    ]
    np.testing.assert_allclose(motion_none, want)
    units = [p.get_height() for p in panels[-1].patches]
    u = results["both"]["fusion5"]["units"]
    np.testing.assert_allclose(units[4:], [100 * u[c] / sum(u.values()) for c in u])
    rows = table1_rows(results, ("fusion5", "fusion2"))
    assert rows[1]["fusion2_stat"] == results["both"]["fusion2"]["percent"]["static"]
    text = table1_markdown(rows, ("fusion5", "fusion2"))
    assert f"{rows[0]['fusion5_dyn']:.1f}" in text.splitlines()[2]
    maps = {
        "none": {"map": np.eye(8), "center_mass": 0.3},
        "both": {"map": np.ones((8, 8)), "center_mass": 0.25},
    }
    seven = fig7(results, maps, ("fusion5", "fusion2"))
    np.testing.assert_array_equal(seven.axes[2].images[0].get_array(), np.eye(8))
    assert [len(ax.images) for ax in center_bias_maps(maps).axes[:2]] == [1, 1]


@pytest.mark.slow
def test_cross_connection_study_reduced_embedded(compose, tmp_path, monkeypatch):
    """experiment=vos_cross_connections at a toy size: two cross connections, both datasets."""
    from stbias.studies.vos_study import draw_study

    monkeypatch.chdir(tmp_path)
    cfg = compose(
        "experiment=vos_cross_connections",
        *TINY,
        "task.cross=[none,motion_to_appearance]",
        "task.train.clips=16",
        "task.train.val_clips=8",
        "task.train.batch_size=8",
        "task.train.max_epochs=1",
        "task.center_bias.clips=40",
        "probe.num_clips=8",
        "probe.batch_size=8",
        f"task.cache_dir={tmp_path / 'trained'}",
        f"probe.cache_dir={tmp_path / 'probe_cache'}",
        run_dir=tmp_path / "run",
    )
    summary, objects = run_task(cfg)
    folder = tmp_path / "run"
    runs = {(r["cross"], r["dataset"]): r for r in summary["runs"]}
    assert set(runs) == {
        (c, d) for c in ("none", "motion_to_appearance") for d in ("camouflage", "salient")
    }
    for (cross, dataset), r in runs.items():
        assert r["probe_dataset"] == dataset and 0 <= r["train"]["val/J"] <= 1
        assert set(r["layers"]) == set(OmegaConf.load(CONF / "model/twostream_seg.yaml").layers)
        assert f"-{cross}-{dataset}-" in r["checkpoint"]
        # J measured again per sequence on the same validation clips equals the training's
        seg = r["segmentation"]
        assert seg["J"] == pytest.approx(r["train"]["val/J"], abs=1e-6)
        assert seg["J_ci"][0] <= seg["J"] <= seg["J_ci"][1]
        # the all-foreground J of a clip is its foreground fraction (masks never empty here)
        data = SyntheticVOS(dataset, "val", num_frames=2, size=32, num_samples=8)
        fraction = np.mean([float(data[i]["mask"][0].float().mean()) for i in range(8)])
        assert seg["J_all_foreground"] == pytest.approx(fraction, abs=1e-9)
    ((effect, *_),) = [summary["cross_effects"]]
    assert effect["reference"] == "none" and effect["cross"] == "motion_to_appearance"
    assert effect["delta_J"] == pytest.approx(
        runs[("motion_to_appearance", effect["dataset"])]["segmentation"]["J"]
        - runs[("none", effect["dataset"])]["segmentation"]["J"]
    )
    # the motion stream never sees the RGB frame in either variant: no static unit there
    assert all(r["layers"]["mot_res3"]["units"]["static"] == 0 for r in runs.values())
    cb = summary["center_bias"]
    assert cb["salient"]["center_mass"] > cb["camouflage"]["center_mass"]
    names = {p.name for p in folder.iterdir()}
    for stem in ("fig4_camouflage", "fig4_salient", "table1", "fig7", "center_bias"):
        assert {f"{stem}.png", f"{stem}.pdf"} <= names
    table = (folder / "table1.md").read_text()
    assert "**cross = motion_to_appearance**" in table and "| salient |" in table
    rows = (folder / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 * 12 and rows[0].startswith("cross,dataset,probe_dataset,val_J")
    # the figures come from the files alone: drawn again from them, the same set of files
    for path in folder.glob("fig*.png"):
        path.unlink()
    written = draw_study(str(folder))
    assert {Path(p).name for p in written} >= {"fig4_camouflage.png", "fig7.png", "table1.md"}
    # a second run trains nothing: the checkpoints are cached
    again, _ = run_task(cfg)
    assert [r["checkpoint"] for r in again["runs"]] == [r["checkpoint"] for r in summary["runs"]]


def test_j_intervals_and_paired_cross_effects_known_answers():
    from stbias.studies.vos_study import bootstrap_mean, cross_effects, segmentation_scores

    assert bootstrap_mean(np.full(5, 0.3), 200, 0) == pytest.approx([0.3, 0.3])
    lo, hi = bootstrap_mean(np.array([0.0, 1.0] * 50), 2000, 0)
    assert lo < 0.5 < hi and hi - lo == pytest.approx(2 * 1.96 * 0.05, rel=0.15)
    scores = segmentation_scores(
        {"model": np.array([0.5, 0.7]), "all_foreground": np.array([0.1, 0.1])}, 100, 0
    )
    assert scores["J"] == pytest.approx(0.6) and scores["J_all_foreground"] == pytest.approx(0.1)
    assert scores["J_above_all_foreground"] == pytest.approx(0.5) and scores["sequences"] == 2
    runs = {
        ("none", "camouflage"): np.array([0.2, 0.4, 0.6]),
        ("motion_to_appearance", "camouflage"): np.array([0.3, 0.5, 0.7]),
        ("motion_to_appearance", "salient"): np.array([0.9]),
    }
    (effect,) = cross_effects(runs, "none", 100, 0)
    # paired over the same sequences: every difference is 0.1, so is the interval
    assert effect["dataset"] == "camouflage" and effect["delta_J"] == pytest.approx(0.1)
    assert effect["ci"] == pytest.approx([0.1, 0.1]) and effect["sequences"] == 3


def test_documented_commands_compose_and_docs_list_the_family(compose):
    import shlex

    text = (ROOT / "docs" / "segmentation.md").read_text()
    block = text.split("```")[1]
    lines = [line.replace("<run>", "outputs/run") for line in block.splitlines()]
    commands = [shlex.split(line)[2:] for line in lines if line.startswith("python")]
    assert len(commands) == 7
    tasks = []
    for overrides in commands:
        cfg = compose(*overrides)
        OmegaConf.to_container(cfg, resolve=True)
        tasks.append(cfg.task.name)
        if cfg.model.get("objective") == "segmentation":
            assert cfg.stylization.two_stream and cfg.model.input.flow
    assert tasks == [
        "train",
        "train",
        "probe",
        "center_bias",
        "center_bias",
        "vos_study",
        "vos_study",
    ]
    models = (ROOT / "docs" / "models.md").read_text()
    for path in sorted((CONF / "model").glob("twostream_seg*.yaml")):
        assert f"`{path.stem}`" in models or f"`_{path.stem.rsplit('_', 1)[1]}`" in models
    layers = OmegaConf.load(CONF / "model" / "twostream_seg.yaml").layers
    for stem in ("app_res", "mot_res", "fusion"):
        first, last = layers[f"{stem}2"], layers[f"{stem}5"]
        assert f"| `{stem}2` … `{stem}5` | `{first}` … `{last}` |" in models


def test_center_bias_minmax_equals_the_authors_summed_masks_scaled_for_display():
    """A transcription of the authors' ``estimate_dataset_centerbias``: every label binarised
    (``> 0``), resized (nearest) to the prior's shape and summed; the figure shows the sum
    with ``imshow``, which scales it from its smallest to its largest value."""
    rng = np.random.default_rng(4)
    masks = np.zeros((12, 16, 16), np.uint8)
    for mask in masks:
        y, x = rng.integers(2, 10, 2)
        mask[y : y + 6, x : x + 6] = rng.integers(1, 3)  # any label > 0 is foreground
    masks[0] = 1  # every pixel foreground at least once: min > 0 splits the two scalings
    prior = np.zeros((16, 16))
    for label in masks:
        binary = (label > 0).astype(np.uint8)
        prior += cv2.resize(binary, (16, 16), interpolation=cv2.INTER_NEAREST)
    shown = (prior - prior.min()) / (prior.max() - prior.min())
    bias = CenterBias(16)
    bias.update((masks > 0).astype(np.uint8))
    out = bias.compute()
    np.testing.assert_allclose(out["map"], shown, atol=1e-12)
    assert out["normalise"] == "minmax"
    by_max = CenterBias(16, "max")
    by_max.update((masks > 0).astype(np.uint8))
    np.testing.assert_allclose(by_max.compute()["map"], prior / prior.max(), atol=1e-12)
    assert not np.allclose(by_max.compute()["map"], shown, atol=0.01)
    with pytest.raises(StbiasError, match="unknown center bias normalise 'peak'; valid: minmax"):
        CenterBias(8, "peak")


def test_vos_figures_draw_bootstrap_intervals_where_the_runs_have_them():
    results = {"none": _layers(0), "both": _layers(1)}
    entry = results["both"]["fusion5"]
    total = sum(entry["units"].values())
    dynamic, static = entry["percent"]["dynamic"], entry["units"]["static"]
    entry["ci"] = {
        "level": 0.95,
        "replicates": 20,
        "percent": {"dynamic": [dynamic - 5.0, dynamic + 3.0]},
        "units": {"static": [static - 1.0, static + 2.0]},
    }
    plain = fig4({"none": _layers(0), "both": _layers(1)}, unit_layer="fusion5")
    assert not [c for ax in plain.axes for c in ax.collections if c.get_segments()]
    fig = fig4(results, unit_layer="fusion5")
    bars = [(ax, c) for ax in fig.axes for c in ax.collections if c.get_segments()]
    assert len(bars) == 2  # the fusion5 split of "both", and its static units on the right
    (_, stacked), (units_ax, units) = bars
    (segment,) = stacked.get_segments()
    np.testing.assert_allclose([segment[0][1], segment[1][1]], [dynamic - 5.0, dynamic + 3.0])
    assert units_ax is fig.axes[-1]
    (segment,) = units.get_segments()
    want = [100 * (static - 1.0) / total, 100 * (static + 2.0) / total]
    np.testing.assert_allclose([segment[0][1], segment[1][1]], want)


def _moca_frames(root: Path, video: str, n: int, size=(40, 48)):
    """Frames whose grey level is 10 * their index (the clip's frames can be told apart)."""
    folder = root / video
    folder.mkdir(parents=True, exist_ok=True)
    for t in range(n):
        cv2.imwrite(str(folder / f"{t:05d}.jpg"), np.full((*size, 3), 10 * t, np.uint8))


MOCA_CSV = """\
# Exported using VGG Image Annotator (http://www.robots.ox.ac.uk/~vgg/software/via)
# SHAPE_ID = {"POINT":1,"RECTANGLE":2,"CIRCLE":3,"ELLIPSE":4,"LINE":5,"POLYLINE":6,"POLYGON":7}
# CSV_HEADER = metadata_id,file_list,flags,temporal_coordinates,spatial_coordinates,metadata
1_a,/arctic_fox/00000.jpg,0,"[]","[2,4,6,10,8]","{""1"":""0""}"
1_b,/arctic_fox/00005.jpg,0,"[]","[4,24,20,6,4]","{}"
1_c,/arctic_fox/00005.jpg,0,"[]","[2,0,0,3,2]","{}"
2_a,"[""/flounder/00003.jpg""]",0,"[]","[2,30,10,5,20]","{}"
3_a,/not_on_disk/00000.jpg,0,"[]","[2,0,0,1,1]","{}"
"""


def test_moca_reader_box_masks_line_up_with_their_frames(tmp_path):
    from stbias.data import moca
    from stbias.data.moca import parse_regions

    _moca_frames(tmp_path / "JPEGImages", "arctic_fox", 8)
    _moca_frames(tmp_path / "JPEGImages", "flounder", 6)
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations/annotations_modified.csv").write_text(MOCA_CSV)
    regions = parse_regions(str(tmp_path / "Annotations/annotations_modified.csv"))
    assert regions["arctic_fox"]["00005"][1] == (2, [0.0, 0.0, 3.0, 2.0])
    ds = moca(str(tmp_path), num_frames=2, sampling_rate=1, size=None)
    # one clip per annotated frame, starting at it; the video not on disk is left out
    assert [(s["id"], s["label"], int(s["frame_indices"][0])) for s in ds] == [
        ("arctic_fox", 0, 0),
        ("arctic_fox", 0, 5),
        ("flounder", 1, 3),
    ]
    first = ds[0]
    assert first["video"].shape == (2, 40, 48, 3)
    levels = first["video"][:, 20, 24, 0].float() / 10
    assert torch.allclose(levels, first["frame_indices"].float(), atol=0.3)
    expected = np.zeros((40, 48), np.uint8)
    expected[6:14, 4:14] = 1  # the box [x=4, y=6, w=10, h=8]
    np.testing.assert_array_equal(first["mask"][0].numpy(), expected)
    assert (first["mask"][1] == 255).all()  # frame 1 has no annotation
    both = ds[1]["mask"][0].numpy()
    assert both[0:2, 0:3].all() and both[20, 24] == 1 and both[20, 31] == 0  # box + ellipse
    assert int(both.sum()) == 6 + int(
        cv2.ellipse(np.zeros((40, 48), np.uint8), (24, 20), (6, 4), 0, 0, 360, 1, -1).sum()
    )
    assert int(ds[2]["mask"][0].sum()) == 5 * 20
    # one clip per video: the frames without annotation are 255; center bias reads the boxes
    whole = moca(str(tmp_path), clips="video", num_frames=8, size=None, temporal="centre")
    assert len(whole) == 2 and [int(whole[0]["mask"][t].max()) for t in (0, 1)] == [1, 255]
    assert [int(m.sum()) for m in whole.iter_masks()][0] == 80
    (tmp_path / "Annotations/annotations_modified.csv").write_text(
        MOCA_CSV.replace("[2,30,10,5,20]", "[9,1,2]")
    )
    with pytest.raises(StbiasError, match=r"line 7: region \[9,1,2\] is not a rectangle"):
        moca(str(tmp_path), num_frames=2, size=None)


def test_moca_mask_reader_pixel_masks_and_missing_root(tmp_path):
    from stbias.data import moca

    split = tmp_path / "MoCA_Video/TestDataset_per_sq"
    _moca_frames(split / "crab", "Imgs", 10)
    gt = split / "crab/GT"
    gt.mkdir()
    for t in (0, 5):
        mask = np.zeros((40, 48), np.uint8)
        mask[t : t + 4, 10:20] = 255
        cv2.imwrite(str(gt / f"{t:05d}.png"), mask)
    ds = moca(str(tmp_path), "val", num_frames=3, size=None)
    assert [int(s["frame_indices"][0]) for s in ds] == [0, 5]
    s = ds[1]
    assert int(s["mask"][0].sum()) == 40 and s["mask"][0, 5:9, 10:20].all()
    assert (s["mask"][1:] == 255).all()
    with pytest.raises(StbiasError, match=r"annotations=masks.*split='train'"):
        moca(str(tmp_path), "train", annotations="masks")
    with pytest.raises(StbiasError, match=r"annotations_modified\.csv"):
        moca(str(tmp_path), "train")
    with pytest.raises(StbiasError, match=r"moca: root '.*nowhere' not found; expected layout"):
        moca(str(tmp_path / "nowhere"))


def test_moca_study_reuses_the_vos_study_segmenters_and_scores_box_j(
    compose, tmp_path, monkeypatch
):
    """task=vos_moca trains with vos_study's cache key, and its J on a MoCA in the released
    layout equals J computed here from the checkpoints and the box masks."""
    from stbias.studies import vos_study
    from stbias.studies.base import training_key

    monkeypatch.chdir(tmp_path)
    root = tmp_path / "MoCA"
    rng = np.random.default_rng(0)
    for video in ("arctic_fox", "flounder"):
        folder = root / "JPEGImages" / video
        folder.mkdir(parents=True)
        for t in range(4):
            cv2.imwrite(str(folder / f"{t:05d}.jpg"), rng.integers(0, 255, (32, 32, 3), np.uint8))
    (root / "annotations.csv").write_text(
        "# CSV_HEADER = metadata_id,file_list,flags,temporal_coordinates,spatial_coordinates,"
        'metadata\n1,/arctic_fox/00001.jpg,0,"[]","[2,4,6,10,8]","{}"\n'
        '2,/flounder/00002.jpg,0,"[]","[2,20,2,5,20]","{}"\n'
    )
    common = [
        *TINY,
        "task.cross=[none,motion_to_appearance]",
        "task.datasets=[camouflage]",
        "task.train.clips=16",
        "task.train.val_clips=8",
        "task.train.batch_size=8",
        "task.train.max_epochs=1",
        f"task.cache_dir={tmp_path / 'trained'}",
    ]
    cfg = compose(
        "experiment=vos_moca",
        *common,
        "task.evaluation.dataset=moca",
        f"task.evaluation.root={root}",
        run_dir=tmp_path / "run",
    )
    study = compose("experiment=vos_cross_connections", *common)
    for cross in ("none", "motion_to_appearance"):
        keys = [
            training_key(vos_study.train_config(c, vos_study.variant(c, cross), "camouflage"))
            for c in (cfg, study)
        ]
        assert keys[0] == keys[1]  # the same training: a vos_study run's checkpoints are reused
    summary, _ = run_task(cfg)
    assert summary["evaluation"] == {
        "dataset": "moca",
        "split": "test",
        "clips": 2,
        "box_masks": True,
    }
    boxes = {0: (slice(6, 14), slice(4, 14)), 1: (slice(2, 22), slice(20, 25))}
    data = [(1, 0), (2, 1)]  # (annotated frame, video)
    for r in summary["runs"]:
        seg = r["segmentation"]
        assert seg["sequences"] == 2
        assert seg["J_all_foreground"] == pytest.approx((80 + 100) / 2 / 1024)
        node = vos_study.variant(cfg, r["cross"])
        node.checkpoint = r["checkpoint"]
        network = build_model(node).eval()
        expected = []
        for frame, video in data:
            name = ["arctic_fox", "flounder"][video]
            frames = [
                cv2.cvtColor(cv2.imread(str(root / f"JPEGImages/{name}/{t:05d}.jpg")), 4)
                for t in (frame, frame + 1)
            ]
            clip = torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2)[None].float() / 255
            with torch.no_grad():
                logits = network(pack_inputs(two_stream_input(clip), node_spec(node)))
            pred = (torch.sigmoid(logits[0, 0, 0]) > 0.5).numpy()
            truth = np.zeros((32, 32), bool)
            truth[boxes[video]] = True
            union = (pred | truth).sum()
            expected.append((pred & truth).sum() / union if union else 1.0)
        assert seg["J"] == pytest.approx(float(np.mean(expected)), abs=1e-9)
    assert (tmp_path / "run/moca_j.png").is_file()
    # evaluated again: nothing is trained, the same checkpoints
    again, _ = run_task(cfg)
    assert [r["checkpoint"] for r in again["runs"]] == [r["checkpoint"] for r in summary["runs"]]
    with pytest.raises(StbiasError, match="set task.evaluation.root"):
        run_task(compose("experiment=vos_moca", *common, "task.evaluation.dataset=moca"))


def node_spec(node) -> InputSpec:
    return InputSpec.from_dict(OmegaConf.to_container(node.input, resolve=True))
