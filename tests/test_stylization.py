"""Stylizers, static/dynamic pairs, flow pairs and the stylizer acceptance check."""

from __future__ import annotations

import colorsys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from stbias.errors import StbiasError
from stbias.stylization import (
    NAMED_STYLES,
    AdaINStylizer,
    PairSampler,
    PrecomputedStylizer,
    TextureStylizer,
    farneback_flow,
    flow_to_hue_saturation,
    hsv_to_rgb,
    make_flow_pair_views,
    make_pair_views,
    permute_frames,
    shuffle_frames,
    shuffled_views,
    split_views,
    stack_views,
    view_names,
)
from stbias.stylization.adain import adain_decoder, vgg19_relu4_1
from stbias.stylization.check import acceptance_table, end_point_error, moving_square_clip
from stbias.stylization.texture import colour_transfer, match_histograms

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture(scope="module")
def texture():
    return TextureStylizer(num_random=2, seed=3)


@pytest.fixture(scope="module")
def moving():
    return moving_square_clip(frames=8, size=64)


def _frame_keys(x: torch.Tensor) -> list[Counter]:
    """Per clip, the multiset of its frames (as exact byte strings) of a (B, C, T, H, W) tensor."""
    return [Counter(x[b, :, t].numpy().tobytes() for t in range(x.shape[2])) for b in range(len(x))]


# --- texture stylizer ---------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_static_clip_stays_static(texture, channels):
    frame = torch.rand(1, channels, 1, 32, 32)
    clip = frame.expand(2, -1, 6, -1, -1).contiguous()
    for style in range(texture.num_styles):
        out = texture(clip, style)
        assert out.shape == clip.shape
        assert torch.allclose(out, out[:, :, :1].expand_as(out), atol=1e-6)
        assert (out - clip).abs().mean() > 0.03
        assert 0 <= out.min() and out.max() <= 1


def test_same_transform_on_every_frame(texture):
    """Reordering frames before or after stylization gives the same clip."""
    clip, _ = moving_square_clip(frames=6, size=32)
    perm = torch.tensor([[3, 0, 5, 1, 4, 2]])
    for style in range(texture.num_styles):
        a = texture(permute_frames(clip, [perm]), style)
        b = permute_frames(texture(clip, style), [perm])
        # equal up to float summation order, which steep lookup-table segments can amplify
        assert (a - b).abs().max() < 1e-3 and (a - b).abs().mean() < 1e-5


def test_seeded_styles_reproducible():
    clip = torch.rand(1, 3, 4, 24, 24)
    a = TextureStylizer(styles=["china"], num_random=3, seed=7)
    b = TextureStylizer(styles=["china"], num_random=3, seed=7)
    c = TextureStylizer(styles=["china"], num_random=3, seed=8)
    assert a.styles == ("china", "random:0", "random:1", "random:2")
    for style in a.styles:
        assert torch.equal(a(clip, style), b(clip, style))
    assert torch.equal(a(clip, "china"), c(clip, "china"))
    assert not torch.allclose(a(clip, "random:1"), c(clip, "random:1"), atol=1e-3)
    outs = [a(clip, s) for s in a.styles]
    assert all((x - y).abs().mean() > 0.02 for i, x in enumerate(outs) for y in outs[i + 1 :])


def test_batched_styles_equal_single_clips(texture):
    clip = torch.rand(3, 3, 4, 20, 28)
    styles = [0, 5, 6]
    batched = texture(clip, styles)
    for b, style in enumerate(styles):
        assert torch.allclose(batched[b : b + 1], texture(clip[b : b + 1], style), atol=1e-5)


def test_histogram_matching_against_skimage():
    from skimage.exposure import match_histograms as reference

    gen = torch.Generator().manual_seed(0)
    source = torch.rand(1, 1, 4000, generator=gen) ** 2
    target = torch.rand(6000, generator=gen) * 0.5 + 0.3
    quantiles = torch.quantile(target, torch.linspace(0, 1, 256)).view(1, 1, -1)
    ours = match_histograms(source, quantiles)[0, 0].numpy()
    theirs = reference(source[0, 0].numpy(), target.numpy())
    assert np.abs(ours - theirs).mean() < 0.005
    assert np.all(np.diff(ours[np.argsort(source[0, 0].numpy())]) >= -1e-6)  # monotone


def test_colour_transfer_moments():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 5000, generator=gen) * torch.tensor([0.1, 0.2, 0.05]).view(1, 3, 1)
    a = torch.randn(3, 3, generator=gen)
    cov = a @ a.T * 0.01 + 0.001 * torch.eye(3)
    evals, evecs = torch.linalg.eigh(cov)
    root = evecs @ torch.diag(evals.sqrt()) @ evecs.T
    mean = torch.tensor([0.2, 0.5, 0.7])
    y = colour_transfer(x, mean.expand(2, 3), root.expand(2, 3, 3))
    assert torch.allclose(y.mean(2), mean.expand(2, 3), atol=1e-5)
    yc = y - y.mean(2, keepdim=True)
    assert torch.allclose(yc @ yc.transpose(1, 2) / y.shape[2], cov.expand(2, 3, 3), atol=1e-5)


def test_unknown_style_names_valid_ones(texture):
    with pytest.raises(StbiasError, match="china"):
        TextureStylizer(styles=["van_gogh"])
    with pytest.raises(StbiasError, match="valid: 0..7"):
        texture(torch.rand(1, 3, 2, 8, 8), 8)
    with pytest.raises(StbiasError, match="C = 1 or 3"):
        texture(torch.rand(1, 2, 2, 8, 8), 0)


# --- acceptance check (SPEC 7) ------------------------------------------------------------------


def test_acceptance_check_every_builtin_style(moving):
    clip, true_flow = moving
    stylizer = TextureStylizer(styles=list(NAMED_STYLES), num_random=2, seed=0)
    table = acceptance_table(stylizer, clip, true_flow)
    baseline = table.pop("original")["flow_rel_epe_true"]
    assert baseline < 0.5  # Farneback itself recovers the known motion
    assert set(table) == set(stylizer.styles)
    for name, row in table.items():
        assert row["flow_rel_epe_max"] < 0.35, name  # flow of two styles agrees
        assert row["flow_rel_epe_true"] < baseline + 0.1, name  # as accurate as the original
        assert row["mad_original"] > 0.08 and row["hist_original"] > 0.2, name
        assert row["mad"] > 0.15 and row["hist"] > 0.3, name
        # every pair of styles differs, random styles included
        assert row["mad_min"] > 0.05 and row["hist_min"] > 0.15, name


def test_acceptance_check_rejects_a_motion_breaking_stylizer(moving):
    """A per-frame transform (a different shift per frame) must fail the flow criterion."""

    class Jitter(TextureStylizer):
        def _stylize(self, clip01, styles, **context):
            out = super()._stylize(clip01, styles)
            shifts = [(0, 0), (3, -2), (-2, 3), (1, 4), (-4, -1), (2, 2), (-3, 0), (0, -3)]
            frames = [out[:, :, t].roll(shifts[t % 8], dims=(2, 3)) for t in range(out.shape[2])]
            return torch.stack(frames, dim=2)

    clip, true_flow = moving
    table = acceptance_table(Jitter(styles=["china", "coffee"]), clip, true_flow)
    assert table["china"]["flow_rel_epe_original"] > 1.0


def test_farneback_recovers_known_motion(moving):
    clip, true_flow = moving
    flow = farneback_flow(clip)
    assert flow.shape == true_flow.shape
    scale = true_flow.norm(dim=1).mean()
    assert end_point_error(flow, true_flow) / scale < 0.5
    assert end_point_error(torch.zeros_like(flow), true_flow) / scale > 0.9


# --- pairs --------------------------------------------------------------------------------------


def test_pairs_single_pathway(texture):
    clip = torch.rand(3, 3, 6, 16, 16)
    views = make_pair_views(clip, texture, index=[4, 9, 2], seed=11)
    styles = views["styles"]
    assert (styles[:, 0] != styles[:, 1]).all()
    assert torch.equal(views["anchor"], texture(clip, styles[:, 0]))
    assert torch.equal(views["dynamic"], texture(clip, styles[:, 1]))
    perm = views["perms"][0]
    assert all(not torch.equal(p, torch.arange(6)) for p in perm)
    assert torch.equal(views["static"], permute_frames(views["anchor"], [perm]))
    assert _frame_keys(views["static"]) == _frame_keys(views["anchor"])
    assert views["pairs"] == {"static": ("anchor", "static"), "dynamic": ("anchor", "dynamic")}
    assert views["factor"]["static"].all() and views["factor"]["dynamic"].all()


def test_pairs_reproducible_per_clip_index(texture):
    clip = torch.rand(2, 3, 5, 12, 12)
    a = make_pair_views(clip, texture, index=[7, 3], seed=5)
    b = make_pair_views(clip[1:], texture, index=[3], seed=5)
    assert torch.equal(a["styles"][1:], b["styles"])
    assert torch.equal(a["perms"][0][1:], b["perms"][0])
    # same frames up to float rounding of the batched convolution
    assert (a["static"][1:] - b["static"]).abs().max() < 1e-3
    draws = {
        (tuple(v["styles"][0].tolist()), tuple(v["perms"][0][0].tolist()))
        for v in (make_pair_views(clip[:1], texture, index=i, seed=5) for i in range(12))
    }
    assert len(draws) > 6  # different clips draw different styles and orders
    c = make_pair_views(clip, texture, index=[7, 3], seed=6)
    assert not (torch.equal(a["styles"], c["styles"]) and torch.equal(a["perms"][0], c["perms"][0]))


def test_pairs_two_pathways_permute_each_pathway(texture):
    clip = torch.rand(2, 3, 8, 16, 16)

    def pack(v):
        return [v[:, :, ::4].clone(), v.clone()]  # SlowFast-like [slow, fast], alpha = 4

    for shuffle in ("one", "both"):
        views = make_pair_views(clip, texture, index=[0, 1], seed=2, frames=[2, 8], shuffle=shuffle)
        # one way: float views out; the caller packs them and forms the shuffled views
        assert "static" not in views and torch.equal(
            views["anchor"], texture(clip, views["styles"][:, 0])
        )
        views.update({name: pack(views[name]) for name in view_names(views)})
        shuffled_views(views)
        first, second = (views[n] for n in views["pairs"]["static"])
        anchor = views["anchor"]
        for k, length in enumerate([2, 8]):
            assert first[k].shape == second[k].shape == anchor[k].shape
            assert first[k].shape[2] == length
            # same multiset of frames per pathway, different order
            assert _frame_keys(first[k]) == _frame_keys(second[k]) == _frame_keys(anchor[k])
            if shuffle == "one" or length > 2:  # two frames have one non-identity order
                assert not torch.equal(first[k], second[k])
        assert torch.equal(views["dynamic"][1], texture(clip, views["styles"][:, 1]))
    assert views["pairs"]["static"] == ("static_anchor", "static")


def test_shuffle_frames_is_never_identity():
    x = torch.arange(2.0).view(1, 1, 2, 1, 1).repeat(3, 1, 1, 1, 1)
    for seed in range(20):
        out = shuffle_frames(x, torch.Generator().manual_seed(seed))
        assert torch.equal(out[:, 0, :, 0, 0], torch.tensor([[1.0, 0.0]] * 3))
    with pytest.raises(StbiasError, match="T >= 2"):
        shuffle_frames(torch.rand(1, 3, 1, 4, 4))


def test_unbalanced_sampling_draws_one_factor_per_clip(texture):
    clip = torch.rand(64, 1, 2, 4, 4)
    views = make_pair_views(clip, texture, index=0, seed=0, balanced=False)
    static, dynamic = views["factor"]["static"], views["factor"]["dynamic"]
    assert torch.equal(static, ~dynamic)
    assert 16 < int(static.sum()) < 48


def test_stack_and_split_views(texture):
    clip = torch.rand(2, 3, 4, 8, 8)
    views = make_pair_views(clip, texture, index=0, frames=[2, 4])
    views.update({name: [views[name][:, :, ::2], views[name]] for name in view_names(views)})
    stacked = stack_views(shuffled_views(views))
    assert [p.shape[0] for p in stacked] == [6, 6]
    parts = split_views(stacked[1], ["anchor", "static", "dynamic"])
    for name, part in parts.items():
        assert torch.equal(part, views[name][1])


# --- flow pairs ---------------------------------------------------------------------------------


def test_hsv_to_rgb_matches_colorsys():
    gen = torch.Generator().manual_seed(0)
    h, s, v = torch.rand(3, 1, 1, 50, generator=gen)
    rgb = hsv_to_rgb(h[None], s[None], v[None])[0, :, 0]
    ref = torch.tensor([colorsys.hsv_to_rgb(*hsv) for hsv in zip(h[0, 0], s[0, 0], v[0, 0])])
    assert torch.allclose(rgb.T, ref.float(), atol=1e-5)


def test_flow_hue_is_direction_and_saturation_magnitude():
    flow = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-4.0, 0.0], [0.0, 0.0]]).T.reshape(1, 2, 1, 1, 4)
    hue, sat = flow_to_hue_saturation(flow)
    assert torch.allclose(hue.flatten()[:3], torch.tensor([0.0, 0.25, 0.5]))
    assert torch.allclose(sat.flatten(), torch.tensor([0.25, 0.5, 1.0, 0.0]))


def test_flow_pairs_structure(texture, moving):
    clip, _ = moving
    clip = clip[:, :, :4].expand(2, -1, -1, -1, -1).contiguous()
    views = make_flow_pair_views(clip, texture, index=[0, 1], seed=0, flow_jitter="per_clip")
    styles = views["styles"]
    rgb_a, rgb_b = (texture(clip, styles[:, i])[:, :, :-1] for i in range(2))
    assert torch.equal(views["anchor"][0], rgb_a) and torch.equal(views["static"][0], rgb_a)
    assert torch.equal(views["dynamic"][0], rgb_b)
    assert torch.equal(views["dynamic"][1], views["anchor"][1])  # the flow is kept
    assert views["anchor"][1].shape == (2, 3, 3, 64, 64)
    # the static view's flow image is the anchor's with hue shifted and saturation scaled
    from skimage.color import rgb2hsv

    assert views["jitter"].shape == (2, 3, 3)  # per frame: one draw repeated over the clip
    assert torch.equal(views["jitter"], views["jitter"][:, :1].expand(-1, 3, -1))
    for b, (shift, factor, _) in enumerate(views["jitter"][:, 0].tolist()):
        assert 0.1 <= abs(shift) <= 0.5 and 1.25 <= max(factor, 1 / factor) <= 2.0
        a = rgb2hsv(views["anchor"][1][b, :, 0].permute(1, 2, 0).numpy())
        s = rgb2hsv(views["static"][1][b, :, 0].permute(1, 2, 0).numpy())
        mask = (a[..., 1] > 0.3) & (a[..., 1] * factor < 0.95)
        dh = np.remainder(s[..., 0] - a[..., 0] - shift + 0.5, 1.0) - 0.5
        assert np.abs(dh[mask]).max() < 1e-3
        assert np.allclose(s[..., 1][mask], a[..., 1][mask] * factor, atol=1e-3)


def test_pair_sampler_two_stream_and_single(texture):
    clip = torch.rand(1, 3, 3, 16, 16)
    single = PairSampler(texture, seed=1)(clip, [5])
    assert single["static"].shape == clip.shape
    sampler = PairSampler(texture, seed=1, two_stream=True)
    double = sampler(clip, [5])
    assert [v.shape[2] for v in double["static"]] == [2, 2]
    assert torch.equal(single["styles"], double["styles"])
    again = sampler(clip, [5])
    assert torch.equal(again["jitter"], double["jitter"])
    assert torch.equal(again["static"][1], double["static"][1])
    other = sampler(clip, [6])
    assert not torch.equal(other["jitter"], double["jitter"])


# --- precomputed --------------------------------------------------------------------------------


def _write_layout(root: Path, videos=("v0", "v1"), frames=5, size=(12, 16)):
    rng = np.random.default_rng(0)
    data = {}
    for style in ("style_1", "style_2", "style_3"):
        for video in videos:
            folder = root / style / video
            folder.mkdir(parents=True)
            for i in range(frames):
                image = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
                cv2.imwrite(str(folder / f"{i + 1:05d}.png"), image[:, :, ::-1])
                data[style, video, i] = image
    return data


@pytest.mark.parametrize("pattern", ["{index:05d}.png", None])
def test_precomputed_reads_authors_layout(tmp_path, pattern):
    data = _write_layout(tmp_path)
    stylizer = PrecomputedStylizer(str(tmp_path), frame_pattern=pattern, first_index=1)
    assert stylizer.styles == ("style_1", "style_2", "style_3")
    clip = torch.zeros(2, 3, 3, 12, 16)
    frames = torch.tensor([[0, 2, 4], [1, 1, 3]])
    out = stylizer(clip, [2, 0], ids=["v1", "v0"], frame_indices=frames)
    for b, (style, video) in enumerate([("style_3", "v1"), ("style_1", "v0")]):
        for t, f in enumerate(frames[b].tolist()):
            expected = torch.from_numpy(data[style, video, f]).permute(2, 0, 1).float() / 255
            assert torch.allclose(out[b, :, t], expected, atol=1e-6)
    small = stylizer(torch.zeros(1, 1, 3, 6, 8), 0, ids=["v0"], frame_indices=frames[:1])
    assert small.shape == (1, 1, 3, 6, 8)


def test_precomputed_errors(tmp_path):
    _write_layout(tmp_path)
    stylizer = PrecomputedStylizer(str(tmp_path), frame_pattern="{index:05d}.png")
    clip = torch.zeros(1, 3, 2, 12, 16)
    with pytest.raises(StbiasError, match="frame indices"):
        stylizer(clip, 0)
    with pytest.raises(StbiasError, match="does not exist"):
        stylizer(clip, 0, ids=["v0"], frame_indices=[[0, 9]])
    with pytest.raises(StbiasError, match="style_1"):
        PrecomputedStylizer(str(tmp_path), styles=["style_9"])


# --- AdaIN --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adain_weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("adain")
    torch.manual_seed(0)
    encoder = vgg19_relu4_1()
    decoder = adain_decoder()
    with torch.no_grad():
        for m in [*encoder.modules(), *decoder.modules()]:
            if isinstance(m, torch.nn.Conv2d):  # variance-preserving, so the style shows
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                torch.nn.init.zeros_(m.bias)
        decoder[-1].weight.mul_(0.1)
        decoder[-1].bias.fill_(0.5)  # outputs land mostly inside [0, 1] instead of clamping
    torch.save({f"features.{k}": v for k, v in encoder.state_dict().items()}, root / "vgg.pth")
    torch.save(decoder.state_dict(), root / "decoder.pth")
    return root


def test_adain_end_to_end_matches_reference(adain_weights):
    from torchvision.models import vgg19

    stylizer = AdaINStylizer(
        str(adain_weights / "vgg.pth"),
        str(adain_weights / "decoder.pth"),
        styles=["china", "coffee"],
        style_size=64,
    )
    clip = torch.rand(2, 3, 3, 32, 32)
    out = stylizer(clip, [1, 0])
    # independent reference: torchvision's VGG-19 with the same file, AdaIN by hand
    vgg = vgg19(weights=None)
    state = torch.load(adain_weights / "vgg.pth", weights_only=True)
    vgg.features[:21].load_state_dict({k[9:]: v for k, v in state.items()})
    decoder = adain_decoder()
    decoder.load_state_dict(torch.load(adain_weights / "decoder.pth", weights_only=True))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        for b, style in enumerate([1, 0]):
            s = vgg.features[:21]((stylizer.style_images[style][None] - mean) / std)[0]
            f = vgg.features[:21]((clip[b].permute(1, 0, 2, 3) - mean) / std)  # (T, 512, h, w)
            fm, fs = f.mean((0, 2, 3), keepdim=True), f.var((0, 2, 3), keepdim=True, unbiased=False)
            g = (f - fm) / (fs + 1e-5).sqrt() * s.std((1, 2), unbiased=False)[:, None, None]
            g = g + s.mean((1, 2))[:, None, None]
            ref = decoder(g).clamp(0, 1).permute(1, 0, 2, 3)
            assert torch.allclose(out[b], ref, atol=1e-4)
    assert out.std() > 0.05 and 0.2 < out.mean() < 0.8
    swapped = stylizer(clip, [0, 1])
    assert (out - swapped).abs().mean() > 0.02  # the two styles differ


def test_adain_static_clip_stays_static_and_gray(adain_weights):
    stylizer = AdaINStylizer(
        str(adain_weights / "vgg.pth"), str(adain_weights / "decoder.pth"), style_size=64
    )
    clip = torch.rand(1, 1, 1, 20, 28).expand(1, 1, 4, 20, 28).contiguous()
    out = stylizer(clip, "flower")
    assert out.shape == clip.shape
    assert torch.allclose(out, out[:, :, :1].expand_as(out), atol=1e-5)


def test_adain_rejects_wrong_weights(adain_weights, tmp_path):
    torch.save({"0.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(StbiasError, match="lack"):
        AdaINStylizer(str(tmp_path / "bad.pth"), str(adain_weights / "decoder.pth"))
    with pytest.raises(StbiasError, match="does not exist"):
        AdaINStylizer(str(adain_weights / "vgg.pth"), str(tmp_path / "missing.pth"))
    with pytest.raises(StbiasError, match="weight files"):
        AdaINStylizer(None, None)


# --- configs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "stylization").glob("*.yaml")))
def test_every_stylization_config_instantiates(compose, name, tmp_path, adain_weights):
    overrides = [f"stylization={name}", "seed=4"]
    if name == "precomputed":
        _write_layout(tmp_path, size=(16, 16))
        overrides += [f"stylization.stylizer.root={tmp_path}", "stylization.stylizer.first_index=1"]
        overrides += ["stylization.stylizer.frame_pattern='{index:05d}.png'"]
    context = {"frame_indices": [[0, 1, 2]]}
    if name == "precomputed_activitynet":  # style_<k>/<video>/%06d.jpg at 5 fps from 1
        _write_named(tmp_path, ["style_1", "style_2"], "v0", [f"{i:06d}.jpg" for i in (1, 2, 3)])
        overrides += [f"stylization.stylizer.root={tmp_path}"]
        context = {"frame_times": [[0.0, 0.2, 0.4]]}
    if name == "precomputed_davis":  # <style>/<sequence>/<source frame name>.jpg
        styles = ["Lynx", "Maruska640", "Zuzka1", "Zuzka2"]
        _write_named(tmp_path, styles, "v0", [f"{i:05d}.jpg" for i in range(3)])
        overrides += [f"stylization.stylizer.root={tmp_path}"]
    if name in ("precomputed_ssv2", "precomputed_diving48"):  # style_k/<video>/<frames>
        _write_named(tmp_path, ["style_1", "style_2"], "v0", [f"{i:05d}.jpg" for i in range(3)])
        overrides += [f"stylization.stylizer.root={tmp_path}"]
    if name == "adain":
        overrides += [
            f"stylization.stylizer.encoder={adain_weights / 'vgg.pth'}",
            f"stylization.stylizer.decoder={adain_weights / 'decoder.pth'}",
            "stylization.stylizer.style_size=64",
        ]
    cfg = compose(*overrides)
    sampler = instantiate(cfg.stylization)
    assert isinstance(sampler, PairSampler) and sampler.name == name and sampler.seed == 4
    clip = torch.rand(1, 3, 3, 16, 16)
    views = sampler(clip, [0], ids=["v0"], **context)
    assert views["static"].shape == views["dynamic"].shape == clip.shape


def _write_named(root: Path, styles: list[str], video: str, names: list[str]) -> None:
    rng = np.random.default_rng(1)
    for style in styles:
        folder = root / style / video
        folder.mkdir(parents=True)
        for name in names:
            image = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
            cv2.imwrite(str(folder / name), image)


@pytest.mark.gpu
def test_texture_on_gpu_matches_cpu(texture):
    clip = torch.rand(2, 3, 4, 32, 32)
    cpu = texture(clip, [0, 6])
    gpu = texture(clip.cuda(), [0, 6])
    assert gpu.is_cuda and torch.allclose(gpu.cpu(), cpu, atol=1e-4)


def test_precomputed_activitynet_reads_the_authors_files_by_time(compose, tmp_path):
    """The authors' stylized ActivityNet: style_k/v_<id>/<%06d>.jpg at 5 fps, numbered from 1."""
    import fixtures
    from hydra.utils import instantiate

    from stbias.data import activitynet, video_to_float
    from stbias.lit.probe import stylizer_context

    root, stylized = fixtures.activitynet(tmp_path / "anet", tmp_path / "sty")
    data = activitynet(
        str(root), "validation", num_frames=4, sampling_rate=15, size=64, short_side=64
    )
    cfg = compose("stylization=precomputed_activitynet", f"stylization.stylizer.root={stylized}")
    stylizer = instantiate(cfg.stylization).stylizer
    assert stylizer.styles == ("style_1", "style_2")
    sample = data[0]
    batch = {k: [v] if isinstance(v, str) else v for k, v in sample.items()}
    batch = {k: (v.unsqueeze(0) if torch.is_tensor(v) else v) for k, v in batch.items()}
    clip01 = video_to_float(batch["video"])
    for style in (0, 1):
        out = stylizer(clip01, style, **stylizer_context(batch))
        # the copy's frame shown at each time: floor(t * 5), file number + 1, grey 40 * k + file
        expected = [40 * (style + 1) + int(t * 5 + 1e-6) + 1 for t in sample["frame_times"]]
        got = [round(float(out[0, 0, j].mean()) * 255) for j in range(4)]
        assert got == expected
    assert sample["source"] == "v_abc123def45" and sample["id"] == "abc123def45_0"


# --- the authors' flow jitter (ExtFlowColorJitter) ----------------------------------------------


def _authors_jitter(flow_image: torch.Tensor, seed: int) -> torch.Tensor:
    """A transcription of the authors' flow jitter: per frame ``H ~ U(0.1, 0.5)``,
    ``S ~ U(0.1, 1)`` from Python's ``random``, then torchvision's
    ``ColorJitter(brightness=0, contrast=0, saturation=S, hue=H)`` on that frame."""
    import random

    from torchvision.transforms import ColorJitter

    random.seed(seed)
    torch.manual_seed(seed)
    out = flow_image.clone()
    for b in range(flow_image.shape[0]):
        for t in range(flow_image.shape[2]):
            hue, saturation = random.uniform(0.1, 0.5), random.uniform(0.1, 1.0)
            out[b, :, t] = ColorJitter(0.0, 0.0, saturation, hue)(flow_image[b, :, t])
    return out


@pytest.fixture(scope="module")
def camouflage_flow():
    """Flow images (Farneback) of 16 embedded camouflage clips, 8 frames of 48 x 48."""
    from stbias.data import SyntheticVOS
    from stbias.data.flow import farneback_flow, flow_to_image

    data = SyntheticVOS("camouflage", num_frames=8, size=48, num_samples=16, seed=0)
    clips = torch.stack([data[i]["video"] for i in range(16)]).permute(0, 4, 1, 2, 3)
    clips = clips.float() / 255
    return clips, flow_to_image(farneback_flow(clips))


def _change(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Mean absolute change of the flow image, per pair (clip)."""
    return (a - b).abs().mean(dim=(1, 2, 3, 4)).numpy()


def test_reference_jitter_ops_equal_torchvisions_on_every_frame():
    import torchvision.transforms.functional as TF

    from stbias.data.flow import flow_to_image
    from stbias.stylization.flow import adjust_hue, adjust_saturation, reference_flow_jitter

    gen = torch.Generator().manual_seed(3)
    image = flow_to_image(torch.randn(2, 2, 3, 8, 8, generator=gen))
    jitter = torch.tensor(
        [
            [[0.3, 1.7, 1.0], [-0.05, 0.2, 0.0], [0.45, 0.0, 1.0]],
            [[-0.4, 1.0, 0.0], [0.12, 0.6, 1.0], [-0.2, 1.95, 0.0]],
        ]
    )
    out = reference_flow_jitter(image, jitter)
    for b in range(2):
        for t in range(3):
            shift, factor, first = jitter[b, t].tolist()
            frame = image[b, :, t]
            if first:
                want = TF.adjust_hue(TF.adjust_saturation(frame, factor), shift)
            else:
                want = TF.adjust_saturation(TF.adjust_hue(frame, shift), factor)
            # torchvision's grey is 0.2989 R (PIL, the authors' images: 0.299)
            torch.testing.assert_close(out[b, :, t], want, atol=2e-4, rtol=0)
    frame = image[:1]
    torch.testing.assert_close(adjust_hue(frame, 0.0), frame, atol=1e-5, rtol=0)
    torch.testing.assert_close(adjust_saturation(frame, 1.0), frame, atol=1e-6, rtol=0)


def test_reference_jitter_reproduces_the_authors_distribution(texture, camouflage_flow):
    clips, flow_image = camouflage_flow
    ours, old, theirs = [], [], []
    for k in range(6):  # 96 pairs each: new draws on the same flow images
        index = list(range(16 * k, 16 * k + 16))
        views = make_flow_pair_views(clips, texture, index, seed=0, flow_image=flow_image)
        ours.append(_change(views["static"][1], flow_image))
        assert views["jitter"].shape == (16, 7, 3)
        clip_views = make_flow_pair_views(
            clips, texture, index, seed=0, flow_image=flow_image, flow_jitter="per_clip"
        )
        old.append(_change(clip_views["static"][1], flow_image))
        theirs.append(_change(_authors_jitter(flow_image, seed=k), flow_image))
    ours, old, theirs = (np.concatenate(v) for v in (ours, old, theirs))
    rng = np.random.default_rng(0)

    def median_se(values: np.ndarray) -> float:
        boot = rng.choice(values, (500, len(values)))
        return float(np.median(boot, axis=1).std())

    se = float(np.hypot(median_se(ours), median_se(theirs)))
    assert abs(np.median(ours) - np.median(theirs)) < 3 * se  # within sampling error
    assert 0.012 < np.median(theirs) < 0.022  # the authors' distribution: about 0.016
    # stbias's earlier per-clip jitter is another distribution: about twice the change
    assert np.median(old) - np.median(theirs) > 5 * np.hypot(median_se(old), median_se(theirs))
    # and the per-frame draws are those of the definition: |shift| <= H <= 0.5, factor in [0, 2]
    draws = views["jitter"].reshape(-1, 3)
    assert draws[:, 0].abs().max() <= 0.5 and 0 <= draws[:, 1].min() and draws[:, 1].max() <= 2
    assert 0.2 < float((draws[:, 0].abs() < 0.1).float().mean()) < 0.6  # small shifts happen


def test_two_stream_models_default_to_the_authors_jitter(compose, texture):
    sampler = instantiate(compose("model=twostream_seg_tiny").stylization)
    assert sampler.two_stream and sampler.flow_jitter == "reference"
    assert sampler.jitter_settings == {"hue_range": (0.1, 0.5), "saturation_range": (0.1, 1.0)}
    cfg = compose("model=twostream_seg_tiny", "stylization.flow_jitter=per_clip")
    assert instantiate(cfg.stylization).flow_jitter == "per_clip"
    with pytest.raises(StbiasError, match="unknown flow jitter 'authors'; valid: reference"):
        PairSampler(texture, two_stream=True, flow_jitter="authors")
    with pytest.raises(StbiasError, match="hue_range must satisfy"):
        PairSampler(texture, flow_jitter_settings={"reference": {"hue_range": [0.2, 0.9]}})
    with pytest.raises(StbiasError, match="give the jitter's name"):
        PairSampler(texture, flow_jitter={"hue_shift": [0.1, 0.5]})
