"""Tests for stbias.models: every model YAML, layer taps, input packing, weights, task=layers."""

from __future__ import annotations

import pathlib
import re
import urllib.error
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch import nn

from stbias.data.flow import two_stream_input
from stbias.errors import StbiasError
from stbias.models import (
    LAYOUTS,
    InputSpec,
    LayerTap,
    capture,
    channels_of,
    load_checkpoint,
    pack_inputs,
    pool_features,
    pooled_features,
    select_layers,
    slow_indices,
    zoo,
)
from stbias.tasks.model_setup import build_model

CONF = Path(__file__).resolve().parents[1] / "conf"
MODEL_YAMLS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
# the CNNs of Kowal et al. Fig. 3 (and their tiny stand-ins): stage 1, the stem, is a layer
STEMS = {
    **{n: ["stem"] for n in ("c2d", "i3d", "slow", "fast", "x3d_xs", "x3d_s", "x3d_m")},
    **{n: ["stem"] for n in ("c2d_tiny", "i3d_tiny")},
    "slowfast": ["slow_stem", "fast_stem"],
    "slowfast_tiny": ["slow_stem", "fast_stem"],
}
# fixed input size (no `reduced` option) or heavy even when reduced: > 5 s on one core
SLOW_MODELS = {"mvit_v2_s"}
CUSTOM = [
    "model.builder.constructor=torchvision.models.video.r3d_18",
    "model.layers={l3: layer3, l4: layer4}",
    "model.channels={l3: 256, l4: 512}",
    "model.input.size=32",
    "model.input.frames=4",
]


def model_overrides(name: str) -> list[str]:
    """`model=<name>` shrunk to the YAML's `reduced` input size when it declares one."""
    raw = OmegaConf.load(CONF / "model" / f"{name}.yaml")
    overrides = [f"model={name}"]
    if name == "custom":
        return overrides + CUSTOM
    reduced = raw.get("reduced")
    if reduced is not None:
        overrides += [f"model.input.size={reduced.size}", f"model.input.frames={reduced.frames}"]
    return overrides


def clip(spec: InputSpec, batch: int = 2, seed: int = 0) -> torch.Tensor | list[torch.Tensor]:
    """Random clips at the spec; a two-stream model's [rgb, flow image] from the data side."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, spec.channels, spec.frames, spec.size, spec.size, generator=g)
    return two_stream_input(x) if spec.flow else x


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_MODELS else n for n in MODEL_YAMLS],
)
def test_every_model_yaml_builds_and_its_aliases_yield_declared_channels(compose, name):
    cfg = compose(*model_overrides(name))
    m = cfg.model
    if m.get("requires"):
        pytest.importorskip(m.requires)
    assert m.name == name
    if m.get("models"):  # a set of models (model=quickstart): each must be an option
        assert {str(x) for x in m.models} <= set(MODEL_YAMLS)
        return
    for key in ("builder", "pretrained", "checkpoint", "layers", "channels", "input"):
        assert key in m, f"{name}.yaml lacks {key!r}"
    assert m.pretrained is False and m.checkpoint is None
    layout = m.get("layout", "cnn")
    assert layout in LAYOUTS
    layers = OmegaConf.to_container(m.layers, resolve=True)
    channels = OmegaConf.to_container(m.channels, resolve=True)
    assert layers, f"{name} declares no layers"
    assert set(channels) == set(layers), f"{name}: channels and layers name different aliases"

    torch.manual_seed(0)
    model = build_model(m).eval()
    spec = InputSpec.from_dict(OmegaConf.to_container(m.input, resolve=True))
    inputs = pack_inputs(clip(spec), spec)
    tap = LayerTap(model, layers, model_name=name)
    with torch.no_grad(), tap:
        logits = model(inputs)
    assert set(tap.outputs) == set(layers)
    for alias, out in tap.outputs.items():
        assert channels_of(out, layout) == channels[alias], f"{name}.{alias}"
        pooled = pool_features(out, layout)
        assert pooled.shape == (2, channels[alias])
        assert torch.isfinite(pooled).all()
    if m.get("num_classes"):
        assert logits.shape == (2, m.num_classes)
    # hooks are gone after the context
    assert all(not mod._forward_hooks for mod in model.modules())
    # the taps a probe reports by default: declared, and none the same numbers as another
    default = list(m.get("probe_layers") or layers)
    assert set(default) <= set(layers), f"{name}: probe_layers not in layers"
    pooled = {a: pool_features(tap.outputs[a], layout) for a in default}
    for i, a in enumerate(default):
        for b in default[i + 1 :]:
            same = pooled[a].shape == pooled[b].shape and torch.allclose(pooled[a], pooled[b])
            assert not same, f"{name}: probe taps {a} and {b} report the same features"
    stems = STEMS.get(name)
    if stems:  # stage 1 of Kowal Fig. 3: the stem, the input of the first residual stage
        first = {"slow_stem": "slow_res2", "fast_stem": "fast_res2"}
        for stem in stems:
            assert stem in layers and stem in default, f"{name} declares no {stem}"
            res2 = first.get(stem, "res2")
            if "fused_res2" in layers and stem == "slow_stem":
                continue  # the slow pathway's res2 reads the stem after the fast-to-slow fusion
            seen = {}
            module = model.get_submodule(layers[res2])
            handle = module.register_forward_pre_hook(lambda _, a, s=seen: s.setdefault("x", a))
            with torch.no_grad(), LayerTap(model, {stem: layers[stem]}) as again:
                model(pack_inputs(clip(spec), spec))  # fresh: SlowFast's fusion edits its input
            handle.remove()
            x = seen["x"][0]
            x = x[0 if stem == "slow_stem" else 1] if isinstance(x, (list, tuple)) else x
            assert torch.equal(again.outputs[stem], x), f"{name}: {stem} is not {res2}'s input"


# ---- layer taps ---------------------------------------------------------------------------


class TwoStage(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv3d(3, 4, 1)
        self.body = nn.Sequential(nn.ReLU(), nn.Conv3d(4, 6, 1))
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.body(self.stem(x)).mean((2, 3, 4)))


def test_tap_returns_each_layer_output_from_one_forward_and_removes_hooks():
    torch.manual_seed(0)
    model = TwoStage()
    x = torch.randn(2, 3, 4, 5, 5)
    out = capture(model, {"stem": "stem", "b1": "body.1"}, x)
    stem = model.stem(x)
    assert torch.allclose(out["stem"], stem)
    assert torch.allclose(out["b1"], model.body(stem))
    assert all(not m._forward_hooks for m in model.modules())


def test_tap_removes_hooks_when_the_forward_fails():
    model = TwoStage()
    with pytest.raises(RuntimeError), LayerTap(model, {"stem": "stem"}):
        model(torch.randn(2, 5, 4, 5, 5))  # wrong channel count: the conv raises
    assert all(not m._forward_hooks for m in model.modules())


def test_stop_early_skips_everything_after_the_last_tap():
    model = TwoStage()
    calls = []
    model.head.register_forward_hook(lambda *a: calls.append(1))
    capture(model, {"stem": "stem"}, torch.randn(1, 3, 2, 3, 3), stop_early=True)
    assert calls == []
    capture(model, {"stem": "stem"}, torch.randn(1, 3, 2, 3, 3), stop_early=False)
    assert calls == [1]


def test_unknown_alias_lists_the_valid_ones():
    layers = {"res2": "blocks.1", "res3": "blocks.3"}
    assert select_layers(layers, ["res3"]) == {"res3": "blocks.3"}
    with pytest.raises(StbiasError, match=r"unknown layer 'res6'; layers of i3d: res2, res3"):
        select_layers(layers, ["res6"], model_name="i3d")


def test_bad_module_path_names_the_children_that_exist():
    with pytest.raises(StbiasError, match=r"no module 'bodyy'.*children there: stem, body, head"):
        LayerTap(TwoStage(), {"x": "bodyy.1"})


class TwoPath(nn.Module):
    def __init__(self):
        super().__init__()
        self.fuse = nn.Identity()

    def forward(self, xs):
        return self.fuse([xs[0] * 2, xs[1]])


def test_list_output_is_refused_with_a_pointer_to_per_pathway_aliases():
    model = TwoPath()
    xs = [torch.ones(1, 2, 3), torch.zeros(1, 4, 3)]
    layers = {"fused": "fuse", "slow": "fuse[0]", "fast": "fuse[1]"}
    with pytest.raises(StbiasError, match=r"list output.*'fuse\[0\]'.*slow, fast"):
        capture(model, layers, xs)
    out = capture(model, {"slow": "fuse[0]", "fast": "fuse[1]"}, xs)
    assert torch.equal(out["slow"], 2 * xs[0]) and torch.equal(out["fast"], xs[1])
    assert all(not m._forward_hooks for m in model.modules())


def test_real_slowfast_stage_list_output_is_refused():
    model = zoo.slowfast_r50().eval()
    spec = InputSpec(frames=8, size=32, pathways=2, alpha=4)
    with pytest.raises(StbiasError, match="per-pathway aliases"):
        capture(
            model,
            {"stage": "blocks.1", "slow_res2": "blocks.1.multipathway_blocks.0"},
            pack_inputs(clip(spec, batch=1), spec),
        )


def test_pooling_layouts_known_answers():
    x = torch.arange(2 * 3 * 2 * 2 * 2, dtype=torch.float).view(2, 3, 2, 2, 2)
    expected = x.flatten(2).mean(-1)
    assert torch.allclose(pool_features(x, "cnn"), expected)
    assert torch.allclose(pool_features(x.permute(0, 2, 3, 4, 1), "channels_last"), expected)
    tokens = x.flatten(2).transpose(1, 2)  # (B, N, C)
    assert torch.allclose(pool_features(tokens, "tokens"), expected)
    cls = torch.full((2, 1, 3), 1000.0)
    with_cls = torch.cat([cls, tokens], 1)
    assert torch.allclose(pool_features(with_cls, "tokens_cls"), expected)
    assert torch.allclose(
        pool_features(with_cls, "tokens_cls", include_cls=True), (expected * 8 + 1000) / 9
    )
    assert torch.equal(pool_features(expected, "tokens_cls"), expected)
    assert channels_of(x, "cnn") == 3 and channels_of(tokens, "tokens") == 3
    with pytest.raises(StbiasError, match="valid layouts"):
        pool_features(x, "nchw")


def test_pooled_features_of_real_mvit_block_drop_the_cls_token():
    # pytorchvideo MViT at a reduced size: tokens (B, 1 + N, C) in block outputs
    model = zoo.mvit_base_16x4(spatial_size=32, temporal_size=4).eval()
    spec = InputSpec(frames=4, size=32)
    x = pack_inputs(clip(spec, batch=1), spec)
    raw = capture(model, {"b0": "blocks.0[0]"}, x)["b0"]
    assert raw.shape == (1, 1 + 2 * 8 * 8, 192)
    pooled = pooled_features(model, {"b0": "blocks.0[0]"}, x, layout="tokens_cls")["b0"]
    assert torch.allclose(pooled, raw[:, 1:].mean(1))


# ---- input packing --------------------------------------------------------------------------


def test_pack_inputs_normalises_per_channel():
    spec = InputSpec(frames=2, size=2, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    video = torch.full((1, 3, 2, 2, 2), 0.5)
    out = pack_inputs(video, spec)
    assert torch.allclose(out[0, :, 0, 0, 0], torch.tensor([0.0, 1.0, 0.5]))


def test_pack_inputs_slowfast_slow_is_a_subset_of_fast_frames():
    spec = InputSpec(frames=32, size=4, pathways=2, alpha=4)
    video = torch.arange(32.0).view(1, 1, 32, 1, 1).expand(1, 3, 32, 4, 4) / 31
    slow, fast = pack_inputs(video, spec)
    assert fast.shape == (1, 3, 32, 4, 4) and slow.shape == (1, 3, 8, 4, 4)
    # pytorchvideo / SlowFast PackPathway: linspace(0, 31, 8).long()
    assert slow_indices(32, 4).tolist() == [0, 4, 8, 13, 17, 22, 26, 31]
    frame_ids = torch.round(((slow[0, 0, :, 0, 0] * 0.225) + 0.45) * 31).long().tolist()
    assert frame_ids == [0, 4, 8, 13, 17, 22, 26, 31]


def test_pack_inputs_repeats_grey_clips_for_rgb_models_and_refuses_other_mismatches():
    spec = InputSpec(frames=2, size=2, mean=(0.0,) * 3, std=(1.0,) * 3)
    with pytest.raises(StbiasError, match="video_to_float"):
        pack_inputs(torch.zeros(1, 3, 2, 2, 2, dtype=torch.uint8), spec)
    with pytest.raises(StbiasError, match=r"\(B, C, T, H, W\)"):
        pack_inputs(torch.zeros(3, 2, 2, 2), spec)
    grey_clip = torch.rand(1, 1, 2, 2, 2)
    packed = pack_inputs(grey_clip, spec)
    assert packed.shape == (1, 3, 2, 2, 2)
    assert all(torch.equal(packed[:, c : c + 1], grey_clip) for c in range(3))
    grey = InputSpec(frames=2, size=2, channels=1, mean=(0.0,), std=(1.0,))
    with pytest.raises(StbiasError, match="model.input.channels=1"):
        pack_inputs(torch.zeros(1, 3, 2, 2, 2), grey)


def test_input_spec_validation():
    with pytest.raises(StbiasError, match="unknown input key"):
        InputSpec.from_dict({"frames": 8, "fps": 30})
    with pytest.raises(StbiasError, match="need 3 values"):
        InputSpec(mean=(0.5,))
    with pytest.raises(StbiasError, match="input.alpha"):
        InputSpec(pathways=2)
    assert InputSpec(frames=32, pathways=2, alpha=4).slow_frames == 8


# ---- weights -------------------------------------------------------------------------------


def small_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv3d(3, 4, 1), nn.BatchNorm3d(4), nn.Flatten(), nn.Linear(4, 2))


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_load_plain_state_dict(tmp_path):
    src, dst = small_net(0), small_net(1)
    assert not same_weights(src, dst)
    torch.save(src.state_dict(), tmp_path / "w.pth")
    report = load_checkpoint(dst, str(tmp_path / "w.pth"))
    assert same_weights(src, dst) and report.ok and report.prefix == ""


def test_load_slowfast_zoo_pyth(tmp_path):
    src, dst = small_net(0), small_net(1)
    torch.save(
        {"model_state": src.state_dict(), "epoch": 196, "optimizer_state": {}}, tmp_path / "m.pyth"
    )
    report = load_checkpoint(dst, str(tmp_path / "m.pyth"))
    assert same_weights(src, dst) and report.container == "model_state"


class Lit(pl.LightningModule):
    def __init__(self, net):
        super().__init__()
        self.model = net
        self.criterion = nn.CrossEntropyLoss(weight=torch.ones(2))


def test_load_lightning_ckpt_strips_the_module_prefix(tmp_path):
    src, dst = small_net(0), small_net(1)
    lit = Lit(src)
    state = lit.state_dict()
    assert "criterion.weight" in state and "model.0.weight" in state
    torch.save(
        {
            "state_dict": state,
            "epoch": 3,
            "global_step": 30,
            "pytorch-lightning_version": pl.__version__,
        },
        tmp_path / "last.ckpt",
    )
    report = load_checkpoint(dst, str(tmp_path / "last.ckpt"))
    assert same_weights(src, dst)
    assert report.prefix == "model." and report.container == "state_dict"
    assert report.ignored == ["criterion.weight"] and report.ok


def test_missing_unexpected_and_mismatched_keys_are_reported(tmp_path):
    src = small_net(0)
    state = src.state_dict()
    del state["3.bias"]
    state["extra.weight"] = torch.zeros(1)
    state["0.weight"] = torch.zeros(5, 3, 1, 1, 1)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(StbiasError) as err:
        load_checkpoint(small_net(1), str(tmp_path / "w.pt"))
    message = str(err.value)
    assert "1 missing key (3.bias)" in message
    assert "1 unexpected key (extra.weight)" in message
    assert "0.weight: file (5, 3, 1, 1, 1) vs model (4, 3, 1, 1, 1)" in message
    dst = small_net(1)
    before = dst.state_dict()["0.weight"].clone()
    report = load_checkpoint(dst, str(tmp_path / "w.pt"), strict=False)
    assert report.missing == ["3.bias"] and report.unexpected == ["extra.weight"]
    assert [k for k, _, _ in report.mismatched] == ["0.weight"]
    assert torch.equal(dst.state_dict()["3.weight"], src.state_dict()["3.weight"])
    assert torch.equal(dst.state_dict()["0.weight"], before)  # mismatched: left as it was


class Armed:
    """Unpickling this object creates a marker file."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_a_file_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "ran.txt"
    path = tmp_path / "evil.pyth"
    torch.save({"model_state": small_net(0).state_dict(), "extra": Armed(marker)}, path)
    with pytest.raises(StbiasError, match="would run code"):
        load_checkpoint(small_net(1), str(path))
    assert not marker.exists()
    # control: the file really is armed, an unsafe load runs its code
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(StbiasError, match="does not exist"):
        load_checkpoint(small_net(0), str(tmp_path / "nope.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(StbiasError, match="not a readable torch file"):
        load_checkpoint(small_net(0), str(tmp_path / "junk.pth"))


def test_checkpoint_through_the_model_config(compose, tmp_path):
    src = zoo.x3d("xs", num_classes=5)
    torch.save({"model_state": src.state_dict()}, tmp_path / "x3d.pyth")
    cfg = compose("model=x3d_xs", "model.num_classes=5", f"model.checkpoint={tmp_path}/x3d.pyth")
    assert same_weights(build_model(cfg.model), src)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty torch hub cache; downloads fail as they would offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    return cache


def test_torchvision_pretrained_uses_the_weight_enum_url_and_hub_cache(hub_cache):
    from torchvision.models import get_model_weights

    src = zoo.torchvision_video("r3d_18")
    url = get_model_weights("r3d_18").DEFAULT.url
    torch.save(src.state_dict(), hub_cache / url.rsplit("/", 1)[1])
    assert same_weights(zoo.torchvision_video("r3d_18", pretrained=True), src)
    tuned = zoo.torchvision_video("r3d_18", pretrained=True, num_classes=10)
    assert tuned.fc.out_features == 10
    assert torch.equal(tuned.layer4[0].conv1[0].weight, src.layer4[0].conv1[0].weight)


def test_pytorchvideo_pretrained_reads_the_model_zoo_pyth_format(hub_cache):
    from pytorchvideo.models.hub.x3d import checkpoint_paths

    src = zoo.x3d("xs")
    torch.save({"model_state": src.state_dict()}, hub_cache / "X3D_XS.pyth")
    assert checkpoint_paths["x3d_xs"].endswith("/X3D_XS.pyth")
    assert same_weights(zoo.x3d("xs", pretrained=True), src)


def test_pretrained_offline_explains_how_to_pass_a_local_file(hub_cache):
    with pytest.raises(StbiasError, match=r"model.checkpoint=/path/to/X3D_S.pyth"):
        zoo.x3d("s", pretrained=True)
    with pytest.raises(StbiasError, match=r"model.checkpoint=/path/to/s3d-.*\.pth"):
        zoo.torchvision_video("s3d", pretrained=True)


def test_models_without_published_weights_or_at_other_sizes_refuse_pretrained():
    with pytest.raises(StbiasError, match="no published weights exist for fast"):
        zoo.fast_only_r50(pretrained=True)
    with pytest.raises(StbiasError, match="input.size=224 and input.frames=16"):
        zoo.mvit_base_16x4(pretrained=True, spatial_size=64, temporal_size=8)
    with pytest.raises(StbiasError, match="cannot be combined with model.pretrained"):
        zoo.pytorchvideo_resnet("i3d_r50", pretrained=True, input_channel=1)


# ---- custom and task=layers -------------------------------------------------------------


def test_custom_needs_an_importable_constructor():
    with pytest.raises(StbiasError, match="model.builder.constructor"):
        zoo.custom()
    with pytest.raises(StbiasError, match="cannot import module"):
        zoo.custom("no_such_pkg.build")
    with pytest.raises(StbiasError, match="not a torch nn.Module"):
        zoo.custom("builtins.dict")
    model = zoo.custom("torch.nn.Conv3d", in_channels=3, out_channels=2, kernel_size=1)
    assert isinstance(model, nn.Conv3d) and model.out_channels == 2


def test_layers_task_prints_every_alias_with_path_channels_and_shape(compose, capsys):
    from stbias.tasks.layers import run

    cfg = compose("task=layers", "model=x3d_xs", "task.reduced=true")
    metrics, objects = run(cfg)
    printed = capsys.readouterr().out
    declared = OmegaConf.to_container(cfg.model.channels)
    assert [r["alias"] for r in metrics["layers"]] == list(declared)
    for row in metrics["layers"]:
        assert row["channels"] == declared[row["alias"]]
        assert f"{row['alias']}  {row['path']}" in printed.replace("   ", "  ")
        assert str(row["shape"]) in printed
    assert "(1, 3, 4, 64, 64)" in printed


def test_layers_task_suggests_module_paths_for_custom(compose, capsys):
    from stbias.tasks.layers import run

    cfg = compose(
        "task=layers",
        "model=custom",
        "task.suggest_depth=1",
        "model.builder.constructor=torchvision.models.video.r3d_18",
        "model.input.size=32",
        "model.input.frames=4",
    )
    metrics, _ = run(cfg)
    printed = capsys.readouterr().out
    assert metrics["layers"] == []
    for path, shape in [("layer3", "(1, 256, 1, 4, 4)"), ("layer4", "(1, 512, 1, 2, 2)")]:
        line = next(line for line in printed.splitlines() if line.strip().startswith(path + " "))
        assert shape in line


# ---- Hugging Face (optional `hf` extra) ----------------------------------------------------


def test_hf_pretrained_loads_through_from_pretrained(tmp_path):
    transformers = pytest.importorskip("transformers")
    from stbias.models.hf import hf_video

    config = transformers.VideoMAEConfig(
        image_size=32,
        num_frames=4,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
    )
    src = transformers.VideoMAEForVideoClassification(config).eval()
    src.save_pretrained(tmp_path / "vmae")
    model = hf_video(
        "videomae", True, num_classes=3, image_size=32, num_frames=4, source=str(tmp_path / "vmae")
    ).eval()
    assert same_weights(model.net, src)
    spec = InputSpec(frames=4, size=32)
    x = pack_inputs(clip(spec), spec)
    assert torch.allclose(model(x), src(pixel_values=x.transpose(1, 2)).logits, atol=1e-6)
    # VideoMAE blocks: (B, T/2 * (H/16) * (W/16), C) tubelet tokens
    out = capture(model, {"b1": "net.videomae.encoder.layer.1"}, x)["b1"]
    assert out.shape == (2, 2 * 2 * 2, 32)
    with pytest.raises(StbiasError, match="input.size=32 and input.frames=4"):
        hf_video("videomae", True, num_classes=3, source=str(tmp_path / "vmae"))


def test_hf_pretrained_unavailable_says_how_to_pass_a_local_directory(tmp_path):
    pytest.importorskip("transformers")
    from stbias.models.hf import hf_video

    with pytest.raises(StbiasError, match=r"save_pretrained\(DIR\).*model.builder.source=DIR"):
        hf_video("timesformer", True, source=str(tmp_path / "missing"))


def test_hf_models_without_transformers_name_the_extra(monkeypatch):
    import stbias.models.hf as hf

    monkeypatch.setattr(hf.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(StbiasError, match=r"pip install 'stbias\[hf\]'"):
        hf.hf_video("videomae")


def test_global_head_pool_equals_the_libraries_fixed_pool_at_the_published_size():
    from pytorchvideo.models import hub

    torch.manual_seed(0)
    ours = zoo.x3d("xs").eval()
    reference = hub.x3d_xs().eval()
    reference.load_state_dict(ours.state_dict())
    assert isinstance(ours.blocks[5].pool.pool, nn.AdaptiveAvgPool3d)
    assert isinstance(reference.blocks[5].pool.pool, nn.AvgPool3d)
    spec = InputSpec(frames=4, size=160)
    x = pack_inputs(clip(spec, batch=1), spec)
    with torch.no_grad():
        assert torch.allclose(ours(x), reference(x), atol=1e-6)


def test_the_readme_model_table_says_what_the_configs_say():
    """Each row of the README's model table names a packaged option, and every `alias` (C) it
    lists is a layer of that option with C channels. A new model needs no row to pass (one
    Python file and one YAML add it); a row, once written, cannot go stale."""
    readme = (CONF.parent / "README.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \|[^|]*\|(.*)\|?$", readme, flags=re.MULTILINE)
    options = {p.stem for p in (CONF / "model").glob("*.yaml")}
    table = [(name, cells) for name, cells in rows if name in options or "×" in cells]
    assert len(table) >= 20, "the README's model table was not found"
    for name, cells in table:
        assert name in options, f"README row `{name}` names no conf/model option"
        channels = OmegaConf.load(CONF / "model" / f"{name}.yaml").get("channels") or {}
        for alias, count in re.findall(r"`(\w+)` \((\d+)\)", cells):
            assert alias in channels, (name, alias)
            assert int(count) == int(channels[alias]), (name, alias, count)


def test_fine_tuning_loads_all_but_a_classifier_of_another_class_count(tmp_path):
    from stbias.models.tiny import i3d_tiny

    torch.manual_seed(0)
    kinetics = i3d_tiny(num_classes=400)
    path = tmp_path / "I3D_TINY_K400.pyth"
    torch.save({"model_state": kinetics.state_dict()}, path)
    diving = i3d_tiny(num_classes=48)
    with pytest.raises(StbiasError, match="shape mismatch"):
        load_checkpoint(diving, str(path))
    report = load_checkpoint(diving, str(path), new_head=48)
    assert report.new_head and all(k.startswith("head") for k in report.new_head)
    new, old = diving.state_dict(), kinetics.state_dict()
    for key in new:
        if key in report.new_head:
            assert new[key].shape[0] == 48
        else:
            assert torch.equal(new[key], old[key]), key
    # only the classifier may differ: another stem is still an error
    grey = i3d_tiny(num_classes=48, in_channels=1)
    with pytest.raises(StbiasError, match="shape mismatch"):
        load_checkpoint(grey, str(path), new_head=48)


# Inflation (I3D-style) and the Places365 CNNs of the release ----------------------------------


def test_an_inflated_frame_wise_net_sees_a_static_clip_as_its_2d_source_sees_the_frame():
    from stbias.models.inflate import InflatedConv3d, inflate
    from stbias.models.tiny import c2d_tiny

    torch.manual_seed(0)
    source = c2d_tiny(num_classes=5).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in source.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    inflated = inflate(source, 3).eval()
    convs = [m for m in inflated.modules() if isinstance(m, InflatedConv3d)]
    assert convs and all(c.conv.kernel_size[0] == 3 for c in convs)
    # weights repeated over time and divided by T: their sum over time is the 2D kernel
    torch.testing.assert_close(
        inflated.stem[0][0].conv.weight.sum(2, keepdim=True), source.stem[0][0].weight
    )
    frame = torch.rand(2, 3, 1, 32, 32)
    with torch.no_grad():
        static = inflated(frame.expand(-1, -1, 6, -1, -1))
        torch.testing.assert_close(static, source(frame), rtol=1e-4, atol=1e-5)
        # a clip that changes over time: the inflated net mixes frames, the source does not
        moving = torch.rand(2, 3, 6, 32, 32)
        assert not torch.allclose(inflated(moving), source(moving), atol=1e-3)


def test_inflate_refuses_a_network_with_nothing_frame_wise():
    from stbias.models.inflate import inflate, inflate_conv
    from stbias.models.tiny import i3d_tiny

    with pytest.raises(StbiasError, match="no frame-wise"):
        inflate(i3d_tiny(num_classes=3))
    with pytest.raises(StbiasError, match="odd"):
        inflate_conv(nn.Conv2d(3, 4, 3), 2)


def _release_file(path, model, **extra):
    """A checkpoint in the layout of the Places365 release (written from DataParallel)."""
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 90, "arch": "resnet18", "state_dict": state, **extra}, path)


def test_a_places365_release_file_loads_into_its_torchvision_architecture(tmp_path):
    import torchvision

    from stbias.models.places import places365

    torch.manual_seed(1)
    released = torchvision.models.resnet18(num_classes=365)
    path = tmp_path / "resnet18_places365.pth.tar"
    _release_file(path, released, best_prec1=torch.tensor(54.7))
    model = places365(arch="resnet18", weights=str(path))
    for key, value in released.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), released.eval()(x))


def test_a_places365_file_that_does_not_fit_names_what_is_wrong(tmp_path):
    import torchvision

    from stbias.models.places import places365

    other = tmp_path / "ten.pth.tar"
    _release_file(other, torchvision.models.resnet18(num_classes=10))
    with pytest.raises(StbiasError, match="shape mismatch fc.bias"):
        places365(arch="resnet18", weights=str(other))
    bare = tmp_path / "bare.pth"
    torch.save({"epoch": 1}, bare)
    with pytest.raises(StbiasError, match="holds no 'state_dict'"):
        places365(arch="resnet18", weights=str(bare))
    with pytest.raises(StbiasError, match="valid: resnet18, resnet50"):
        places365(arch="wideresnet18", weights=str(bare))
    code = tmp_path / "code.pth.tar"
    torch.save({"state_dict": {}, "model": nn.Linear(1, 1)}, code)
    with pytest.raises(StbiasError, match="refused to load"):
        places365(arch="resnet18", weights=str(code))


def test_an_image_backbone_reads_its_weights_and_yields_pooled_features(tmp_path):
    import torchvision

    from stbias.models.places import image_backbone

    source = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model = image_backbone(arch="resnet18", weights=str(path)).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 64)).shape == (2, 512)
