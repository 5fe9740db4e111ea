"""Architectures stbias defines itself: Inception-I3D, the ConvLSTM classifier and the tiny nets."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from stbias.errors import StbiasError
from stbias.models.clstm import ConvLSTM, clstm
from stbias.models.inception_i3d import BLOCK_CHANNELS, Unit3D, _same_padding, inception_i3d
from stbias.models.tiny import c2d_tiny, i3d_tiny, slowfast_tiny

ROOT = Path(__file__).resolve().parents[1]
ARCH_YAMLS = ["i3d_inception", "clstm", "i3d_tiny", "c2d_tiny", "slowfast_tiny"]
# Reduced clip sizes (frames, height=width) per model, so the whole file stays fast on one core.
TEST_SIZE = {
    "i3d_inception": (8, 32),
    "clstm": (8, 32),
    "i3d_tiny": (16, 64),
    "c2d_tiny": (16, 64),
    "slowfast_tiny": (16, 64),
}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@contextmanager
def capture(model: torch.nn.Module, paths: Iterable[str]):
    """Record the output of every module in ``paths`` during the forward passes inside the block."""
    out: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for path in paths:
            module = model.get_submodule(path)
            handles.append(
                module.register_forward_hook(lambda _m, _i, o, path=path: out.__setitem__(path, o))
            )
        yield out
    finally:
        for handle in handles:
            handle.remove()


def clip_input(spec, batch: int, frames: int, size: int, seed: int = 0):
    """A random normalised clip shaped as the model's input spec asks (a list for two pathways)."""
    g = torch.Generator().manual_seed(seed)
    fast = torch.randn(batch, spec.channels, frames, size, size, generator=g)
    if spec.get("pathways", 1) == 2:
        return [fast[:, :, :: spec.alpha], fast]
    return fast


def load_model_cfg(name: str):
    return OmegaConf.load(ROOT / "conf" / "model" / f"{name}.yaml")


@pytest.mark.parametrize("name", ARCH_YAMLS)
def test_yaml_builds_and_every_alias_yields_declared_channels(name):
    cfg = load_model_cfg(name)
    assert cfg.name == name
    assert cfg.pretrained is False and cfg.checkpoint is None
    assert cfg.builder.in_channels == cfg.input.channels
    assert len(cfg.input.mean) == len(cfg.input.std) == cfg.input.channels
    if cfg.input.get("pathways", 1) == 2:
        assert cfg.builder.alpha == cfg.input.alpha
    model = instantiate(cfg.builder).eval()
    frames, size = TEST_SIZE[name]
    x = clip_input(cfg.input, 2, frames, size)
    assert set(cfg.layers) == set(cfg.channels)
    with capture(model, cfg.layers.values()) as feats, torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, cfg.builder.num_classes)
    for alias, path in cfg.layers.items():
        out = feats[path]
        assert isinstance(out, torch.Tensor), alias
        assert out.shape[0] == 2 and out.shape[1] == cfg.channels[alias], (alias, tuple(out.shape))


@pytest.mark.parametrize("builder", [i3d_tiny, c2d_tiny, slowfast_tiny])
def test_tiny_models_are_small_and_run_on_16x64x64(builder):
    model = builder(num_classes=7, in_channels=3).eval()
    assert 10_000 < n_params(model) <= 2_000_000
    x = torch.randn(4, 3, 16, 64, 64)
    with torch.no_grad():
        logits = model([x[:, :, ::4], x] if builder is slowfast_tiny else x)
    assert logits.shape == (4, 7)
    one_channel = builder(num_classes=3, in_channels=1).eval()
    g = torch.randn(1, 1, 8, 32, 32)
    with torch.no_grad():
        assert one_channel([g[:, :, ::4], g] if builder is slowfast_tiny else g).shape == (1, 3)


def _pooled(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with capture(model, ["head.pool"]) as feats, torch.no_grad():
        model(x)
    return feats["head.pool"].flatten(1)


def test_c2d_tiny_pooled_features_ignore_frame_order_and_i3d_tiny_do_not():
    torch.manual_seed(0)
    c2d, i3d = c2d_tiny(num_classes=5).eval(), i3d_tiny(num_classes=5).eval()
    x = torch.randn(2, 3, 16, 64, 64)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        perm = torch.randperm(16, generator=g)
        assert not torch.equal(perm, torch.arange(16))
        shuffled = x[:, :, perm]
        a, b = _pooled(c2d, x), _pooled(c2d, shuffled)
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
        c, d = _pooled(i3d, x), _pooled(i3d, shuffled)
        assert (c - d).abs().max() > 1e-3 * c.abs().max()


def test_c2d_tiny_stages_are_frame_wise():
    """Every stage maps frame t to frame t: shuffling the input shuffles the features alike."""
    model = c2d_tiny(num_classes=5).eval()
    x = torch.randn(1, 3, 6, 32, 32)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    paths = ["stages.0", "stages.1", "stages.2"]
    with capture(model, paths) as ref, torch.no_grad():
        model(x)
    ref = dict(ref)
    with capture(model, paths) as out, torch.no_grad():
        model(x[:, :, perm])
    for path in paths:
        torch.testing.assert_close(out[path], ref[path][:, :, perm], rtol=1e-5, atol=1e-6)


def test_i3d_inception_reduced_stride_keeps_more_time_steps():
    x = torch.randn(1, 3, 16, 32, 32)
    steps = {}
    for reduced in (False, True):
        model = inception_i3d(num_classes=4, reduced_stride=reduced).eval()
        with capture(model, ["Mixed_5c", "Mixed_4f"]) as feats, torch.no_grad():
            model(x)
        steps[reduced] = (feats["Mixed_4f"].shape[2], feats["Mixed_5c"].shape[2])
    # Default: T/4 after the first convolution and MaxPool3d_4a, T/8 after MaxPool3d_5a.
    # Mänttäri et al.: T and T/2.
    assert steps[False] == (4, 2)
    assert steps[True] == (16, 8)


def test_i3d_inception_reduced_stride_has_the_same_weights():
    plain = inception_i3d(num_classes=4).state_dict()
    reduced = inception_i3d(num_classes=4, reduced_stride=True).state_dict()
    assert {k: v.shape for k, v in plain.items()} == {k: v.shape for k, v in reduced.items()}


def test_i3d_inception_parameter_count_matches_manttari():
    # Mänttäri et al., Sec. 4.2: 12,465,614 parameters for their I3D on Something-Something.
    assert n_params(inception_i3d(num_classes=174)) == 12_465_614


def test_i3d_inception_state_dict_keys_follow_the_reference_layout(tmp_path):
    def unit(prefix: str, bn: bool = True) -> set[str]:
        keys = {f"{prefix}.conv3d.weight"}
        if bn:
            stats = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
            keys |= {f"{prefix}.bn.{s}" for s in stats}
        return keys

    expected = unit("Conv3d_1a_7x7") | unit("Conv3d_2b_1x1") | unit("Conv3d_2c_3x3")
    blocks = [f"Mixed_{b}" for b in ("3b", "3c", "4b", "4c", "4d", "4e", "4f", "5b", "5c")]
    for block in blocks:
        for branch in ("b0", "b1a", "b1b", "b2a", "b2b", "b3b"):
            expected |= unit(f"{block}.{branch}")
    expected |= {"logits.conv3d.weight", "logits.conv3d.bias"}
    model = inception_i3d(num_classes=400)
    state = model.state_dict()
    assert set(state) == expected
    assert state["Conv3d_1a_7x7.conv3d.weight"].shape == (64, 3, 7, 7, 7)
    assert state["Mixed_3b.b1b.conv3d.weight"].shape == (128, 96, 3, 3, 3)
    assert state["Mixed_5c.b3b.conv3d.weight"].shape == (128, 832, 1, 1, 1)
    assert state["logits.conv3d.weight"].shape == (400, 1024, 1, 1, 1)
    assert BLOCK_CHANNELS["Mixed_5c"] == 1024 and BLOCK_CHANNELS["Mixed_4f"] == 832

    path = tmp_path / "i3d.pt"
    torch.save(state, path)
    loaded = torch.load(path, weights_only=True)
    fresh = inception_i3d(num_classes=400)
    fresh.load_state_dict(loaded, strict=True)
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), model.eval()(x), rtol=0, atol=0)
    inception_i3d(num_classes=400, reduced_stride=True).load_state_dict(loaded, strict=True)


def test_i3d_inception_one_input_channel():
    model = inception_i3d(num_classes=100, in_channels=1, reduced_stride=True).eval()
    assert model.Conv3d_1a_7x7.conv3d.weight.shape[1] == 1
    with torch.no_grad():
        assert model(torch.randn(2, 1, 8, 32, 32)).shape == (2, 100)


def test_unit3d_pads_like_tensorflow_same():
    # TensorFlow SAME: total padding max(k - s, 0) for sizes divisible by s, the extra at the end.
    assert _same_padding((16, 15, 15), (7, 7, 7), (2, 2, 2)) == [3, 3, 3, 3, 2, 3]
    unit = Unit3D(1, 1, (7, 7, 7), (2, 2, 2))
    assert unit(torch.randn(1, 1, 15, 33, 10)).shape[2:] == (8, 17, 5)


def test_i3d_inception_rejects_bad_values():
    with pytest.raises(StbiasError, match="in_channels=0"):
        inception_i3d(in_channels=0)
    with pytest.raises(StbiasError, match=r"\(B, C, T, H, W\)"):
        inception_i3d(num_classes=2)(torch.randn(3, 8, 32, 32))


def test_clstm_layers_pass_whole_sequences_on():
    model = clstm(num_classes=5).eval()
    assert len(model.layers) == 3
    x = torch.randn(2, 3, 8, 32, 32)
    seen_by_next: dict[int, torch.Tensor] = {}
    handles = [
        model.layers[i].register_forward_pre_hook(
            lambda _m, args, i=i: seen_by_next.__setitem__(i, args[0])
        )
        for i in (1, 2)
    ]
    paths = ["layers.0", "layers.1", "layers.2", "layers.2.clstm"]
    try:
        with capture(model, paths) as feats, torch.no_grad():
            logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    assert logits.shape == (2, 5)
    # 32 -> stride 2 -> 16 -> pool -> 8 -> 4 -> 2 -> 1 -> 1 (ceil), every time step kept.
    assert feats["layers.0"].shape == (2, 32, 8, 8, 8)
    assert feats["layers.1"].shape == (2, 32, 8, 2, 2)
    assert feats["layers.2"].shape == (2, 32, 8, 1, 1)
    assert feats["layers.2.clstm"].shape == (2, 32, 8, 1, 1)
    assert torch.equal(seen_by_next[1], feats["layers.0"])
    assert torch.equal(seen_by_next[2], feats["layers.1"])
    assert len(clstm(num_classes=5, num_layers=2).layers) == 2


def test_clstm_is_causal_in_time():
    """Changing frame 5 changes the last layer's states from step 5 on, never before."""
    model = clstm(num_classes=5).eval()
    x = torch.randn(1, 3, 8, 32, 32)
    y = x.clone()
    y[:, :, 5] += 1.0
    with torch.no_grad():
        a, b = model.forward_features(x), model.forward_features(y)
    diff = (a - b).abs().amax(dim=(0, 1, 3, 4))
    assert torch.all(diff[:5] == 0)
    assert torch.all(diff[5:] > 0)


def test_convlstm_matches_the_lstm_equations():
    torch.manual_seed(0)
    layer = ConvLSTM(2, 3, kernel_size=3, stride=2)
    x = torch.randn(1, 2, 3, 8, 8)
    wx, bx, wh = layer.input_conv.weight, layer.input_conv.bias, layer.hidden_conv.weight
    h = torch.zeros(1, 3, 4, 4)
    c = torch.zeros_like(h)
    expected = []
    for t in range(3):
        z = F.conv2d(x[:, :, t], wx, bx, stride=2, padding=1) + F.conv2d(h, wh, padding=1)
        i, f, g, o = (z[:, k * 3 : (k + 1) * 3] for k in range(4))
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        expected.append(h)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), torch.stack(expected, 2).detach())


def test_clstm_layer_sizes_match_keras_convlstm2d():
    # Keras ConvLSTM2D(32, 5x5): 4 * (k*k*C_in*F + k*k*F*F + F) weights per layer.
    model = clstm(num_classes=174)
    sizes = [n_params(block.clstm) for block in model.layers]
    assert sizes == [4 * (25 * 3 * 32 + 25 * 32 * 32 + 32)] + [4 * (25 * 32 * 32 * 2 + 32)] * 2
    assert sizes == [112_128, 204_928, 204_928]


def test_clstm_rejects_bad_values():
    with pytest.raises(StbiasError, match="num_layers=2"):
        clstm(num_classes=3, num_layers=2, hidden_channels=[32])
    with pytest.raises(StbiasError, match="kernel_size"):
        clstm(num_classes=3, kernel_size=4)


def test_slowfast_tiny_pathways_and_fusions():
    model = slowfast_tiny(num_classes=6, alpha=4).eval()
    fast = torch.randn(2, 3, 16, 64, 64)
    paths = ["slow.stages.2", "fast.stages.2", "fusions.0", "fusions.2", "head.pool"]
    with capture(model, paths) as feats, torch.no_grad():
        logits = model([fast[:, :, ::4], fast])
    assert logits.shape == (2, 6)
    assert feats["slow.stages.2"].shape[:3] == (2, 128, 4)
    assert feats["fast.stages.2"].shape[:3] == (2, 32, 16)
    assert feats["fusions.0"].shape[1] == 16 + 2 * 4
    assert feats["fusions.2"].shape[1] == 64 + 2 * 16
    pooled = torch.cat(
        [feats["slow.stages.2"].mean((2, 3, 4)), feats["fast.stages.2"].mean((2, 3, 4))], 1
    )
    torch.testing.assert_close(feats["head.pool"], pooled)


def test_slowfast_tiny_fast_pathway_sees_frame_order():
    model = slowfast_tiny(num_classes=6).eval()
    fast = torch.randn(1, 3, 16, 32, 32)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    with capture(model, ["fast.stages.2"]) as a, torch.no_grad():
        model([fast[:, :, ::4], fast])
    a = a["fast.stages.2"].mean((2, 3, 4))
    with capture(model, ["fast.stages.2"]) as b, torch.no_grad():
        model([fast[:, :, ::4], fast[:, :, perm]])
    b = b["fast.stages.2"].mean((2, 3, 4))
    assert (a - b).abs().max() > 1e-3 * a.abs().max()


def test_slowfast_tiny_rejects_misaligned_pathways():
    model = slowfast_tiny(num_classes=6, alpha=4).eval()
    fast = torch.randn(1, 3, 16, 32, 32)
    with pytest.raises(StbiasError, match="alpha=4"):
        model([fast[:, :, ::2], fast])
    with pytest.raises(StbiasError, match=r"\[slow, fast\]"):
        model(fast)


def test_tiny_builders_reject_bad_values():
    with pytest.raises(StbiasError, match="num_classes=0"):
        i3d_tiny(num_classes=0)
    with pytest.raises(StbiasError, match="dropout"):
        c2d_tiny(dropout=1.5)


def test_archs_doc_lists_every_alias():
    doc = (ROOT / "docs" / "models.md").read_text()
    for name in ARCH_YAMLS:
        cfg = load_model_cfg(name)
        assert f"`{name}`" in doc
        for alias, path in cfg.layers.items():
            assert f"`{alias}`" in doc and f"`{path}`" in doc, (name, alias)
