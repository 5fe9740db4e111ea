"""Weight temporality (SPEC §3): ASDT, self-convolution, the task and its figures."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, open_dict
from torch import nn

from stbias.api import WeightTemporality
from stbias.errors import StbiasError
from stbias.metrics.weights import (
    ASDT,
    SelfConvolution,
    asdt,
    asdt_scaled,
    layer_temporality,
    self_convolution,
    temporal_channels,
    temporal_convs,
    temporal_kernels,
    weight_temporality,
)
from stbias.plotting.weights import plot_asdt, plot_temporal_channels
from stbias.tasks.model_setup import build_model

ROOT = Path(__file__).resolve().parents[1]


# independent references: explicit loops over kernels, numpy only


def asdt_reference(w: np.ndarray) -> float:
    n, m, t, h, wd = w.shape
    total, count = 0.0, 0
    for a in range(n):
        for b in range(m):
            for i in range(h):
                for j in range(wd):
                    v = w[a, b, :, i, j].astype(np.float64)
                    mu = sum(v) / t
                    total += (sum((x - mu) ** 2 for x in v) / t) ** 0.5
                    count += 1
    return total / count


def sc_reference(w: np.ndarray) -> np.ndarray:
    n, m, t = w.shape[:3]
    out = np.zeros((n, m))
    for a in range(n):
        for b in range(m):
            for s in range(t - 1):
                out[a, b] += float(np.sum(w[a, b, s].astype(np.float64) * w[a, b, s + 1]))
    return out


def channel_reference(w: np.ndarray, delta: float, literal: bool) -> list[bool]:
    sc = sc_reference(w)
    out = []
    for row in sc:
        votes = [(s > delta) if literal else (s < delta) for s in row]
        out.append(sum(votes) > len(votes) / 2)
    return out


# functional measures against the references and known answers


@pytest.mark.parametrize(
    "shape", [(4, 3, 3, 3, 3), (5, 2, 5, 1, 1), (6, 1, 3, 3, 3), (2, 3, 2, 2, 1)]
)
def test_asdt_and_sc_match_numpy_reference(shape):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    wn = w.numpy()
    assert float(asdt(w)) == pytest.approx(asdt_reference(wn), rel=1e-10)
    assert float(asdt_scaled(w)) == pytest.approx(asdt_reference(wn) / wn.std(), rel=1e-6)
    np.testing.assert_allclose(self_convolution(w).numpy(), sc_reference(wn), rtol=1e-10)
    for rule, literal in (("spec", False), ("literal", True)):
        for delta in (0.0, 0.5):
            got = temporal_channels(w, delta, rule).tolist()
            assert got == channel_reference(wn, delta, literal)


def test_identical_slices_give_zero_asdt_and_a_static_kernel():
    slice_ = torch.randn(
        1, 1, 1, 3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    w = slice_.repeat(1, 1, 4, 1, 1)
    assert float(asdt(w)) == pytest.approx(0.0, abs=1e-12)
    assert float(asdt_scaled(w)) == pytest.approx(0.0, abs=1e-10)
    sc = float(self_convolution(w)[0, 0])
    assert sc == pytest.approx(3 * float((slice_**2).sum()), rel=1e-10)
    assert not bool(temporal_kernels(w)[0, 0])
    assert bool(temporal_kernels(w, rule="literal")[0, 0])


def test_opposite_slices_give_a_temporal_kernel():
    slice_ = torch.randn(
        1, 1, 1, 3, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )
    w = torch.cat([slice_, -slice_], dim=2)
    assert float(self_convolution(w)[0, 0]) == pytest.approx(-float((slice_**2).sum()), rel=1e-10)
    assert bool(temporal_kernels(w)[0, 0])
    assert not bool(temporal_kernels(w, rule="literal")[0, 0])
    # population std of {a, -a} is |a|
    assert float(asdt(w)) == pytest.approx(float(slice_.abs().mean()), rel=1e-10)


def _kernel(temporal: bool) -> torch.Tensor:
    """One (T=2, 1, 1) kernel with sc = -1 (temporal) or +1 (static)."""
    return torch.tensor([1.0, -1.0 if temporal else 1.0]).reshape(2, 1, 1)


def test_channel_needs_a_strict_majority_of_temporal_kernels():
    pattern = [
        [True, True, False, False],  # exactly half: static
        [True, True, True, False],  # majority: temporal
        [False, False, False, False],
        [True, True, True, True],
    ]
    w = torch.stack([torch.stack([_kernel(k) for k in row]) for row in pattern])
    assert w.shape == (4, 4, 2, 1, 1)
    assert temporal_channels(w).tolist() == [False, True, False, True]
    # odd M: 2 of 3 is a majority, 1 of 3 is not
    w3 = torch.stack([torch.stack([_kernel(k) for k in row[:3]]) for row in pattern[:2]])
    assert temporal_channels(w3).tolist() == [True, True]
    w3b = torch.stack([torch.stack([_kernel(k) for k in (True, False, False)])])
    assert temporal_channels(w3b).tolist() == [False]
    numbers = layer_temporality(w)
    assert numbers["temporal_channels"] == 2
    assert numbers["channels"] == 4
    assert numbers["temporal_fraction"] == 0.5
    assert numbers["temporal_kernels"] == 9
    assert numbers["kernels"] == 16


def test_delta_threshold_is_strict_in_both_rules():
    w = torch.tensor([1.0, 2.0]).reshape(1, 1, 2, 1, 1)  # sc = 2
    assert not bool(temporal_kernels(w, delta=2.0)[0, 0])
    assert not bool(temporal_kernels(w, delta=2.0, rule="literal")[0, 0])
    assert bool(temporal_kernels(w, delta=2.5)[0, 0])
    assert bool(temporal_kernels(w, delta=1.5, rule="literal")[0, 0])


@pytest.mark.parametrize("scale", [1e-3, 0.5, 7.0, -3.0])
def test_scaled_asdt_is_invariant_to_weight_scale(scale):
    w = torch.randn(8, 4, 3, 3, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert float(asdt_scaled(scale * w)) == pytest.approx(float(asdt_scaled(w)), rel=1e-9)
    assert float(asdt(scale * w)) == pytest.approx(abs(scale) * float(asdt(w)), rel=1e-9)
    # sc scales by scale**2, so with delta = 0 the classification never changes
    assert temporal_channels(scale * w).tolist() == temporal_channels(w).tolist()


def test_bad_weights_and_rules_are_user_errors():
    with pytest.raises(StbiasError, match=r"T = 1"):
        asdt(torch.zeros(2, 2, 1, 3, 3))
    with pytest.raises(StbiasError, match=r"\(N, M, T, H, W\)"):
        self_convolution(torch.zeros(2, 2, 3, 3))
    with pytest.raises(StbiasError, match=r"'inverse'.*spec, literal"):
        temporal_kernels(torch.zeros(2, 2, 3, 1, 1), rule="inverse")
    with pytest.raises(StbiasError, match=r"no convolution with temporal extent > 1"):
        weight_temporality(nn.Sequential(nn.Conv3d(3, 4, (1, 3, 3)), nn.Linear(4, 2)))


# which layers count


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.spatial = nn.Conv3d(3, 8, (1, 3, 3))
        self.temporal = nn.Conv3d(8, 8, (3, 1, 1))
        self.point = nn.Conv3d(8, 8, 1)
        self.full = nn.Conv3d(8, 6, (3, 3, 3))
        self.depthwise = nn.Conv3d(6, 6, (5, 3, 3), groups=6)
        self.image = nn.Conv2d(6, 6, 3)
        self.fc = nn.Linear(6, 2)


def test_only_temporal_convolutions_count_in_registration_order():
    model = Mixed()
    layers = WeightTemporality(model, aliases={"t": "temporal", "stage": "full.weight"}).run()
    assert list(layers) == ["temporal", "full", "depthwise"]
    assert [v["depth"] for v in layers.values()] == [1, 2, 3]
    assert [v["kernel"] for v in layers.values()] == [[3, 1, 1], [3, 3, 3], [5, 3, 3]]
    assert [v["label"] for v in layers.values()] == ["t", "full", "depthwise"]
    dw = layers["depthwise"]
    assert (dw["channels"], dw["kernels"]) == (6, 6)  # M = 1: one kernel per channel
    ref = model.depthwise.weight.detach().numpy()
    assert dw["temporal_channels"] == sum(channel_reference(ref, 0.0, False))
    assert dw["asdt"] == pytest.approx(asdt_reference(ref), rel=1e-10)


def test_transposed_convolution_is_read_with_outputs_first():
    conv = nn.ConvTranspose3d(4, 6, (3, 1, 1), groups=2)
    (found,) = temporal_convs(nn.Sequential(conv))
    w = conv.weight.detach()  # (C_in = 4, C_out / groups = 3, T, H, W)
    assert found.weight.shape == (6, 2, 3, 1, 1)
    for g in range(2):
        for o in range(3):
            for i in range(2):
                assert torch.equal(found.weight[g * 3 + o, i], w[g * 2 + i, o])


def test_metric_classes_match_the_functional_api():
    gen = torch.Generator().manual_seed(5)
    a, b = torch.randn(4, 3, 3, 3, 3, generator=gen), torch.randn(6, 3, 3, 3, 3, generator=gen)
    metric = ASDT()
    metric.update(a)
    value, scaled = metric.compute()
    assert float(value) == pytest.approx(float(asdt(a)), rel=1e-10)
    assert float(scaled) == pytest.approx(float(asdt_scaled(a)), rel=1e-8)
    metric.update(b)
    value, scaled = metric.compute()
    both = torch.cat([a, b])
    assert float(value) == pytest.approx(float(asdt(both)), rel=1e-10)
    assert float(scaled) == pytest.approx(float(asdt_scaled(both)), rel=1e-8)
    sc = SelfConvolution(delta=0.1, rule="literal")
    sc.update(a)
    sc.update(b)
    expected = temporal_channels(both, 0.1, "literal")
    assert int(sc.temporal_channels) == int(expected.sum())
    assert float(sc.compute()) == pytest.approx(float(expected.double().mean()))


def test_factorised_r2plus1d_counts_only_temporal_factors():
    from torchvision.models.video import r2plus1d_18

    model = r2plus1d_18()
    layers = weight_temporality(model)
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv3d)}
    expected = [n for n, m in convs.items() if m.kernel_size[0] > 1]
    assert list(layers) == expected
    assert len(layers) == 17
    for name, values in layers.items():
        assert tuple(convs[name].kernel_size) == (3, 1, 1)
        assert values["kernel"] == [3, 1, 1]
    assert not any(convs[n].kernel_size[0] == 1 for n in layers)


# figures


def _runs_for_plot():
    torch.manual_seed(0)
    init = weight_temporality(Mixed())
    trained = weight_temporality(Mixed())
    return {"init": init, "trained": trained}


def test_figures_plot_the_results_values():
    runs = json.loads(json.dumps(_runs_for_plot()))  # exactly what results.json holds
    fig = plot_asdt(runs)
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["init", "trained"]
    for line, layers in zip(lines, runs.values()):
        assert list(line.get_xdata()) == [v["depth"] for v in layers.values()]
        assert list(line.get_ydata()) == [v["asdt"] for v in layers.values()]
    fig = plot_asdt(runs, scaled=True)
    assert list(fig.axes[0].get_lines()[1].get_ydata()) == [
        v["asdt_scaled"] for v in runs["trained"].values()
    ]
    fig = plot_temporal_channels(runs)
    bars = {c.get_label(): [p.get_height() for p in c.patches] for c in fig.axes[0].containers}
    for label, layers in runs.items():
        assert bars[f"{label}: temporal"] == [v["temporal_channels"] for v in layers.values()]
        assert bars[f"{label}: static"] == [
            v["channels"] - v["temporal_channels"] for v in layers.values()
        ]


# the task


def _check_figures(out: Path):
    for stem in ("asdt", "asdt_scaled", "temporal_channels"):
        png, pdf = out / f"{stem}.png", out / f"{stem}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5_000


def _check_results(out: Path, model: nn.Module, expected_layers: dict):
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "weights"
    layers = results["layers"]
    names = [
        n for n, m in model.named_modules() if isinstance(m, nn.Conv3d) and m.kernel_size[0] > 1
    ]
    assert list(layers) == names == list(expected_layers)
    for name, values in layers.items():
        for key in ("asdt", "asdt_scaled", "temporal_channels", "channels", "temporal_fraction"):
            assert values[key] == pytest.approx(expected_layers[name][key], rel=1e-9)
        assert values["depth"] == expected_layers[name]["depth"]
        assert values["kernel"] == list(dict(model.named_modules())[name].kernel_size)
    return results


ZOO = ["r2plus1d_18", "s3d", "i3d", "x3d_m", "i3d_inception"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_task_on_model_zoo_with_random_weights(compose, name, tmp_path, monkeypatch):
    from stbias.runner import run_task
    from stbias.tasks.model_setup import build_model

    monkeypatch.chdir(tmp_path)
    cfg = compose("metric=asdt", f"model={name}")
    results, objects = run_task(cfg)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    stored = _check_results(tmp_path, model, weight_temporality(model))
    assert stored == json.loads(json.dumps(results))
    assert objects["dir"] == tmp_path
    _check_figures(tmp_path)


TINY = """
name: tiny3d
builder:
  _target_: torch.nn.Sequential
  _args_:
    - {_target_: torch.nn.Conv3d, in_channels: 3, out_channels: 8, kernel_size: [3, 3, 3]}
    - {_target_: torch.nn.ReLU}
    - {_target_: torch.nn.Conv3d, in_channels: 8, out_channels: 8, kernel_size: [1, 3, 3]}
    - {_target_: torch.nn.Conv3d, in_channels: 8, out_channels: 8, kernel_size: [3, 1, 1]}
pretrained: false
checkpoint: null
layers: {stem: "0", temporal: "3"}
"""


@pytest.fixture
def checkpoint_loader(monkeypatch):
    """The models piece's loader when present; a plain state-dict loader otherwise."""
    try:
        import stbias.models.weights  # noqa: F401
    except ImportError:
        module = types.ModuleType("stbias.models.weights")

        def load_checkpoint(model, path):
            model.load_state_dict(torch.load(path, weights_only=True))

        module.load_checkpoint = load_checkpoint
        monkeypatch.setitem(sys.modules, "stbias.models.weights", module)


def test_task_compares_checkpoints_on_one_plot(compose, tmp_path, monkeypatch, checkpoint_loader):
    from hydra.utils import instantiate

    from stbias.runner import run_task

    monkeypatch.chdir(tmp_path)
    model_cfg = OmegaConf.create(TINY)
    (tmp_path / "tiny3d.yaml").write_text(TINY)
    model = instantiate(model_cfg.builder)
    # "trained": every kernel of the first conv made static, of the last made temporal
    with torch.no_grad():
        model[0].weight.copy_(model[0].weight[:, :, :1].repeat(1, 1, 3, 1, 1))
        model[3].weight[:, :, 1] = -model[3].weight[:, :, 0]
        model[3].weight[:, :, 2] = model[3].weight[:, :, 0]
    torch.save(model.state_dict(), tmp_path / "trained.pt")
    cfg = compose("metric=selfconv", "metric.compare=[null,trained.pt]")
    with open_dict(cfg):
        cfg.model = OmegaConf.load(tmp_path / "tiny3d.yaml")
        cfg.metric.labels = ["init", "trained"]
    results, _ = run_task(cfg)
    assert results["metric"] == "selfconv"
    assert list(results["compare"]) == ["init", "trained"]
    trained = results["compare"]["trained"]["layers"]
    assert list(trained) == ["0", "3"]
    assert [v["label"] for v in trained.values()] == ["stem", "temporal"]
    assert trained["0"]["asdt"] == pytest.approx(0.0, abs=1e-9)
    assert trained["0"]["temporal_channels"] == 0
    assert trained["3"]["temporal_channels"] == 8  # sc = -2|w_0|^2 for every kernel
    assert trained["3"]["asdt"] == pytest.approx(
        asdt_reference(model[3].weight.detach().numpy()), rel=1e-9
    )
    torch.manual_seed(0)
    init = weight_temporality(instantiate(model_cfg.builder))
    assert results["layers"]["0"]["asdt"] == pytest.approx(init["0"]["asdt"], rel=1e-12)
    stored = json.loads((tmp_path / "results.json").read_text())
    assert stored["compare"]["trained"]["checkpoint"] == "trained.pt"
    fig = plot_temporal_channels({k: v["layers"] for k, v in stored["compare"].items()})
    assert len(fig.axes[0].containers) == 4
    _check_figures(tmp_path)
    rows = (tmp_path / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 and rows[0].startswith("model,run,checkpoint,layer")


def test_task_rejects_mismatched_labels(compose, tmp_path, monkeypatch):
    from stbias.runner import run_task

    monkeypatch.chdir(tmp_path)
    cfg = compose("metric=asdt", "metric.compare=[null,a.pt]", "metric.labels=[one]")
    with open_dict(cfg):
        cfg.model = OmegaConf.create(TINY)
    with pytest.raises(StbiasError, match="one label per checkpoint"):
        run_task(cfg)
    with open_dict(cfg):
        cfg.metric.labels = ["one", "two"]
    with pytest.raises(StbiasError, match=r"not files: \['a.pt'\]"):
        run_task(cfg)


@pytest.mark.slow
def test_command_line_writes_into_hydra_run_dir(tmp_path):
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "tiny3d.yaml").write_text(TINY)
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        str(ROOT / "run.py"),
        "metric=asdt",
        "model=tiny3d",
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
        f"hydra.run.dir={out}",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert list(results["layers"]) == ["0", "3"]
    assert results["metric"] == "asdt"
    _check_figures(out)


@pytest.mark.slow
def test_trained_tiny_checkpoint_against_its_initialisation(compose, tmp_path, monkeypatch):
    from omegaconf import open_dict

    from stbias.runner import run_task

    train_args = [
        "task=train",
        "model=i3d_tiny",
        "dataset=brushmnist_small",
        "model.input.frames=8",
        "model.input.size=32",
        "trainer.max_epochs=1",
        "train.batch_size=8",
        "logger=none",
        "trainer.limit_train_batches=6",
        "trainer.limit_val_batches=1",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "train.optimizer.lr=0.05",
    ]
    cfg = compose(*train_args)
    with open_dict(cfg):
        cfg.train.output_dir = str(tmp_path / "train")
    trained, _ = run_task(cfg)
    ckpt = trained["checkpoint"]
    monkeypatch.chdir(tmp_path)
    cfg = compose(
        "metric=asdt",
        "model=i3d_tiny",
        f"metric.compare=[null,{ckpt}]",
        "metric.labels=[init,trained]",
    )
    results, _ = run_task(cfg)
    runs = {label: run["layers"] for label, run in results["compare"].items()}
    assert list(runs) == ["init", "trained"]
    assert results["compare"]["trained"]["checkpoint"] == ckpt
    assert list(runs["init"]) == list(runs["trained"]) and len(runs["init"]) >= 3
    # the trained network (one grey input channel, 100 classes) really is another set of weights
    assert any(runs["init"][k]["asdt"] != runs["trained"][k]["asdt"] for k in runs["init"])
    _check_figures(tmp_path)


# ---- released weights of Fig. 11: R(2+1)D-34 (ig65m-pytorch) and ir-CSN-152 (VMZ pt/) ----------


def _release_state(arch: str, classes: int, shared_mid: bool = False) -> dict[str, torch.Tensor]:
    """A state dict in the release's key layout at one block per stage, written the way the
    releases build their networks: torchvision's VideoResNet with the releases' convolutions."""
    from torchvision.models.video import resnet as tv

    class SeparateMid(nn.Sequential):  # each (2+1)D conv sizes its own middle width
        def __init__(self, cin, cout, mid, stride=1, padding=1):
            if not shared_mid:
                mid = cin * cout * 27 // (cin * 9 + 3 * cout)
            spatial = nn.Conv3d(cin, mid, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False)
            temporal = nn.Conv3d(mid, cout, (3, 1, 1), (stride, 1, 1), (1, 0, 0), bias=False)
            super().__init__(spatial, nn.BatchNorm3d(mid), nn.ReLU(), temporal)

        @staticmethod
        def get_downsample_stride(stride):
            return stride, stride, stride

    class ChannelWise(nn.Conv3d):
        def __init__(self, cin, cout, mid=None, stride=1, padding=1):
            super().__init__(cin, cout, 3, stride, padding, groups=cin, bias=False)

        @staticmethod
        def get_downsample_stride(stride):
            return stride, stride, stride

    def pooled_stem():
        return nn.Sequential(
            nn.Conv3d(3, 64, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False),
            nn.BatchNorm3d(64),
            nn.ReLU(),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
        )

    torch.manual_seed(1)
    if arch == "r2plus1d":
        net = tv.VideoResNet(
            tv.BasicBlock, [SeparateMid] * 4, [1, 1, 1, 1], tv.R2Plus1dStem, num_classes=classes
        )
    else:
        net = tv.VideoResNet(
            tv.Bottleneck, [ChannelWise] * 4, [1, 1, 1, 1], pooled_stem, num_classes=classes
        )
    state = net.state_dict()
    for key, value in state.items():  # trained-looking statistics, not the init's 0 and 1
        if value.is_floating_point():
            state[key] = torch.randn_like(value) * 0.1 + (1.0 if key.endswith("var") else 0.0)
    return state


def _load_release(compose, tmp_path, name, arch, classes, state):
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)
    cfg = compose(
        f"model={name}",
        "model.builder.layers=[1,1,1,1]",
        f"model.num_classes={classes}",
        f"model.checkpoint={path}",
    )
    return build_model(cfg.model)


@pytest.mark.parametrize(
    "name, arch, classes",
    [("r2plus1d_34_ig65m", "r2plus1d", 487), ("ir_csn_152_sports1m", "ir_csn", 487)],
)
def test_released_vmz_weights_land_tensor_by_tensor(compose, tmp_path, name, arch, classes):
    state = _release_state(arch, classes)
    model = _load_release(compose, tmp_path, name, arch, classes, state)
    loaded = model.state_dict()
    assert set(loaded) == set(state)  # every tensor of the file has its place, and no more
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
    assert all(m.eps == 1e-3 for m in model.modules() if isinstance(m, nn.BatchNorm3d))
    assert model.eval()(torch.rand(1, 3, 4, 32, 32)).shape == (1, classes)


def test_r2plus1d_34_needs_each_convolutions_own_middle_width(compose, tmp_path):
    """torchvision's R(2+1)D shares one middle width per block; the release does not."""
    shared = _release_state("r2plus1d", 487, shared_mid=True)
    with pytest.raises(StbiasError, match=r"do not fit the model: .*shape mismatch"):
        _load_release(compose, tmp_path, "r2plus1d_34_ig65m", "r2plus1d", 487, shared)


def test_asdt_of_loaded_release_weights_known_answers(compose, tmp_path):
    """Kernels constant in time: ASDT 0 in every layer; otherwise ASDT is numpy's temporal std of
    the file's tensors, averaged."""
    state = _release_state("ir_csn", 359)
    temporal = {
        k[: -len(".weight")]: v for k, v in state.items() if v.dim() == 5 and v.shape[2] > 1
    }
    model = _load_release(compose, tmp_path, "ir_csn_152_ig65m", "ir_csn", 359, state)
    layers = weight_temporality(model)
    assert list(layers) == list(temporal)  # depth order is the file's order
    for name, weight in temporal.items():
        expected = np.asarray(weight, dtype=np.float64).std(axis=2).mean()
        assert layers[name]["asdt"] == pytest.approx(expected, rel=1e-12), name
    flat = {
        k: (v[:, :, :1].expand_as(v).clone() if k[:-7] in temporal else v) for k, v in state.items()
    }
    still = weight_temporality(
        _load_release(compose, tmp_path, "ir_csn_152_ig65m", "ir_csn", 359, flat)
    )
    assert len(still) == len(temporal) and all(v["asdt"] == 0.0 for v in still.values())


# key names and shapes of antoine77340/S3D_HowTo100M's s3d_howto100m.pth (the release's S3D class)
S3D_RELEASE_KEYS = {
    "conv1.conv1.weight": (64, 24, 2, 4, 4),
    "conv1.bn1.running_var": (64,),
    "conv_2b.conv1.weight": (64, 64, 1, 1, 1),
    "conv_2c.conv1.weight": (192, 64, 1, 3, 3),
    "conv_2c.conv2.weight": (192, 192, 3, 1, 1),
    "conv_2c.bn2.weight": (192,),
    "gating.fc.weight": (192, 192),
    "mixed_3b.conv_b0.conv1.weight": (64, 192, 1, 1, 1),
    "mixed_3b.conv_b1_b.conv2.weight": (128, 128, 3, 1, 1),
    "mixed_3b.gating_b3.fc.bias": (32,),
    "mixed_4e.conv_b2_b.conv1.weight": (64, 32, 1, 3, 3),
    "mixed_5c.conv_b1_b.conv2.weight": (384, 384, 3, 1, 1),
    "mixed_5c.conv_b3_b.bn1.num_batches_tracked": (),
    "fc.weight": (512, 1024),
    "text_module.word_embd.weight": (66250, 300),
    "text_module.fc1.weight": (2048, 300),
    "text_module.fc2.weight": (512, 2048),
}


def test_s3d_howto100m_release_layout_loads_every_tensor(compose, tmp_path):
    cfg = compose("model=s3d_howto100m")
    torch.manual_seed(3)
    layout = build_model(cfg.model).state_dict()
    for key, shape in S3D_RELEASE_KEYS.items():
        assert tuple(layout[key].shape) == shape, key
    # every top-level name is the release's: the trunk's modules, fc and text_module
    assert {k.split(".")[0] for k in layout} == {
        "conv1", "conv_2b", "conv_2c", "gating", "fc", "text_module",
        *(f"mixed_{b}" for b in ("3b", "3c", "4b", "4c", "4d", "4e", "4f", "5b", "5c")),
    }  # fmt: skip
    state = {
        k: (torch.randn_like(v) if v.is_floating_point() else v + 7) for k, v in layout.items()
    }
    path = tmp_path / "s3d_howto100m.pth"
    torch.save(state, path)
    with open_dict(cfg.model):
        cfg.model.checkpoint = str(path)
    model = build_model(cfg.model).eval()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    with torch.no_grad():
        assert model(torch.rand(1, 3, 8, 32, 32)).shape == (1, 512)
    temporal = weight_temporality(model)
    # the (2, 4, 4) stem and every (3, 1, 1) factor: conv_2c and two per Inception block
    assert len(temporal) == 1 + 1 + 2 * 9
    first = state["conv1.conv1.weight"].double().numpy()
    assert temporal["conv1.conv1"]["asdt"] == pytest.approx(first.std(axis=2).mean(), rel=1e-12)
