"""Explanations (SPEC §5): temporal masks, Grad-CAM per time step, blob statistics, the tasks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import open_dict
from torch import nn

from stbias.errors import StbiasError
from stbias.metrics.blobs import BlobStatistics, blob_params, frame_blobs, welch_ttest
from stbias.metrics.gradcam import (
    GradCAM,
    gradcam_maps,
    infer_grid,
    normalize_maps,
    to_grid,
    upsample,
)
from stbias.metrics.masks import (
    TemporalMask,
    TemporalMaskStatistics,
    _pick_initial,
    centred_masks,
    drop_measures,
    freeze,
    reverse,
    temporal_mask_statistics,
    tv_beta,
)
from stbias.runner import run_task

ROOT = Path(__file__).resolve().parents[1]

# the paper's example (Sec. 3.1): frames t1..t16 under this binary mask
PAPER_MASK = [0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0]
PAPER_REVERSED = [1, 2, 3, 8, 7, 6, 5, 4, 9, 10, 11, 12, 13, 15, 14, 16]


def integer_clip(frames: int = 16, batch: int = 1) -> torch.Tensor:
    """Clips whose frame t (1-based) holds the value t everywhere: (B, 2, T, 3, 3)."""
    t = torch.arange(1, frames + 1, dtype=torch.float64).view(1, 1, frames, 1, 1)
    return t.expand(batch, 2, frames, 3, 3).clone()


def frame_values(y: torch.Tensor) -> list[float]:
    return y[0, 0, :, 0, 0].tolist()


# --- perturbations: exact frame orders ------------------------------------------------------------


def test_reverse_gives_the_paper_frame_order():
    y = reverse(integer_clip(), torch.tensor(PAPER_MASK, dtype=torch.float64))
    assert frame_values(y) == PAPER_REVERSED
    assert torch.equal(y[:, 0], y[:, 1])  # every channel and pixel alike


def test_freeze_repeats_the_frame_before_each_masked_run():
    y = freeze(integer_clip(), torch.tensor(PAPER_MASK, dtype=torch.float64))
    assert frame_values(y) == [1, 2, 3, 3, 3, 3, 3, 3, 9, 10, 11, 12, 13, 13, 13, 16]


def test_freeze_blends_recursively_and_ignores_the_first_mask_value():
    x = integer_clip(4)
    m = torch.tensor([1.0, 0.5, 0.25, 1.0], dtype=torch.float64)
    y1 = 1.0
    y2 = 0.5 * 2 + 0.5 * y1
    y3 = 0.75 * 3 + 0.25 * y2
    y4 = y3
    assert frame_values(freeze(x, m)) == pytest.approx([y1, y2, y3, y4])


def test_reverse_blend_spec_and_reference_parity():
    x = integer_clip(6)
    m = torch.tensor([0.0, 0.8, 0.6, 0.4, 0.05, 0.0], dtype=torch.float64)  # run 1..3
    spec = frame_values(reverse(x, m))
    # per position: y_t = (1 - m_t) x_t + m_t x_rev(t); frame 2 (index) is the run's middle
    assert spec == pytest.approx([1, 0.2 * 2 + 0.8 * 4, 3, 0.6 * 4 + 0.4 * 2, 5, 6])
    ref = frame_values(reverse(x, m, blend="reference"))
    # the authors' code: both frames of the pair (1, 3) take m_1 = 0.8
    assert ref == pytest.approx([1, 0.2 * 2 + 0.8 * 4, 3, 0.2 * 4 + 0.8 * 2, 5, 6])


def test_reverse_runs_per_clip_of_a_batch():
    x = integer_clip(5, batch=2)
    m = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 0]], dtype=torch.float64)
    y = reverse(x, m)
    assert y[0, 0, :, 0, 0].tolist() == [3, 2, 1, 4, 5]
    assert y[1, 0, :, 0, 0].tolist() == [1, 2, 4, 3, 5]


# --- total variation, initialisation, drop measures ---------------------------------------------


def tv_reference_loop(m: list[float], beta: float) -> float:
    """The authors' loop over interior positions (without the cube root and cube)."""
    val = 0.0
    for u in range(1, len(m) - 1):
        val += abs(m[u - 1] - m[u]) ** beta + abs(m[u + 1] - m[u]) ** beta
    return val


@pytest.mark.parametrize("frames", [2, 3, 5, 16])
def test_tv_beta_counts_each_difference_once_and_the_reference_as_the_authors(frames):
    m = torch.rand(frames, generator=torch.Generator().manual_seed(frames), dtype=torch.float64)
    values = m.tolist()
    spec = sum(abs(values[t + 1] - values[t]) ** 3 for t in range(frames - 1))
    assert float(tv_beta(m, 3.0)) == pytest.approx(spec)
    assert float(tv_beta(m, 3.0, "reference")) == pytest.approx(tv_reference_loop(values, 3.0))


def test_tv_gradient_is_finite_on_a_flat_mask():
    m = torch.ones(2, 8, requires_grad=True)
    tv_beta(m, 3.0).sum().backward()
    assert torch.isfinite(m.grad).all() and not m.grad.any()
    with pytest.raises(StbiasError, match="beta"):
        tv_beta(m, 0.5)


def test_centred_masks_are_exactly_centred():
    assert centred_masks(16).sum(1).tolist() == [2, 4, 6, 8, 10, 12, 14, 16]
    assert centred_masks(5).tolist() == [[0, 0, 1, 0, 0], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1]]


def test_initial_mask_spec_takes_the_smallest_passing_reference_the_first_failing():
    masks = centred_masks(8)  # lengths 2, 4, 6, 8
    full = torch.tensor([1.0, 1.0, 1.0, -0.1, -0.1, 0.0, 0.0, 0.0])
    drops = torch.tensor(
        [
            [0.95, 0.5, 0.92, 1.0],  # passes at 2 (and 6): spec 2; reference 6 -> 4 fails: 4
            [0.1, 0.2, 0.95, 1.0],  # spec 6; reference: 6 passes, 4 fails: 4
            [0.1, 0.2, 0.3, 1.0],  # spec 8; reference: 6 fails first: 6
            # OS <= the fully frozen score: spec starts full; reference follows the loop
            [0.5, 0.5, 0.5, 0.5],  # ratio 0.5 / -0.1 = -5 fails at once: 6
            [-0.5, -0.2, -0.1, 0.0],  # ratios 1, 2, 5: never fail, the last tried: 2
            [0.5, 0.5, 0.5, 0.5],  # ratio +inf never fails: 2
            [0.5, 0.5, -0.5, 0.5],  # ratio -inf at 6 fails at once: 6
            [0.0, 0.0, 0.0, 0.0],  # ratio NaN never fails: 2
        ]
    )
    spec = _pick_initial(drops, full, masks, 0.9, "spec").sum(1).tolist()
    ref = _pick_initial(drops, full, masks, 0.9, "reference").sum(1).tolist()
    assert spec == [2, 6, 8, 8, 8, 8, 8, 8]
    assert ref == [4, 4, 6, 6, 2, 2, 6, 2]
    # a transcription of the authors' init_mask loop on the same drops (their ratio, their break)
    for row in range(len(drops)):
        length = None
        for i in range(1, 8 // 2):
            length = 8 - 2 * i
            ratio = drops[row, length // 2 - 1] / full[row]
            if ratio < 0.9:
                break
        assert ref[row] == length


def test_drop_ratio_filters_and_counts():
    out = drop_measures(
        torch.tensor([0.9, 0.9, 0.9, 0.5]),
        torch.tensor([0.1, 0.8995, 0.2, 0.1]),
        torch.tensor([0.5, 0.5, 0.8995, 0.3]),
    )
    assert out["drop_ratio_kept"].tolist() == [True, False, False, True]
    assert out["drop_ratio"][0].item() == pytest.approx(0.8 / 0.4)
    assert out["drop_ratio"][3].item() == pytest.approx(0.4 / 0.2)
    assert out["drop_difference"].tolist() == pytest.approx([0.4, -0.3995, 0.6995, 0.2])


# --- a hand-built network whose class score depends only on frames a..b --------------------------


class WindowNet(nn.Module):
    """Class 0's logit: a red patch at P seen in frames a..b (and nowhere else counts).

    ``features`` picks the red and green channels (a 1x1x1 convolution, then an in-place ReLU:
    Grad-CAM must be unaffected by it). The class-0 logit is the red activation weighted by a bump
    at P, summed over frames a..b, scaled so a clip with the red patch there scores high; class 1's
    logit is a constant. Green (channel 1) never counts.
    """

    def __init__(self, a: int, b: int, size: int = 16, patch: tuple[int, int] = (4, 4)) -> None:
        super().__init__()
        self.a, self.b = a, b
        self.features = nn.Conv3d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.features.weight.zero_()
            self.features.weight[0, 0] = 1.0
            self.features.weight[1, 1] = 1.0
        self.relu = nn.ReLU(inplace=True)
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        py, px = patch
        bump = torch.exp(-((yy - py - 1.5) ** 2 + (xx - px - 1.5) ** 2) / 4.0)
        self.register_buffer("bump", bump / bump.sum())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu(self.features(x))
        red = (a[:, 0, self.a : self.b + 1] * self.bump).sum((-1, -2)).sum(-1)
        logit0 = 10.0 * red / (self.b - self.a + 1) - 5.0
        return torch.stack([logit0, torch.zeros_like(logit0)], dim=1)


def window_clip(frames: int, a: int, b: int, size: int = 16) -> torch.Tensor:
    """Red patch at P (4..7) in frames a..b, red patch at R elsewhere, green patch Q everywhere."""
    g = torch.Generator().manual_seed(0)
    x = 0.05 * torch.rand(1, 3, frames, size, size, generator=g)
    for t in range(frames):
        if a <= t <= b:
            x[0, 0, t, 4:8, 4:8] = 1.0
        else:
            x[0, 0, t, 10:14, 10:14] = 1.0
        x[0, 1, t, 10:14, 2:6] = 1.0
    return x


def test_known_answer_freeze_mask_covers_the_window_and_little_else():
    frames, a, b = 16, 3, 6  # off-centre: the centred start covers 3..12
    net = WindowNet(a, b)
    clip = window_clip(frames, a, b)
    out = TemporalMask(net, iterations=300).run(clip)
    mask = out["mask"][0]
    on = (mask > 0.5).nonzero().flatten().tolist()
    assert on == list(range(a, b + 1))
    assert out["initial_length"].item() == 10  # the smallest centred mask covering 3..6
    assert out["os"].item() > 0.9 and out["fs"].item() < 0.05
    # TV_3 keeps soft shoulders beside the window (below 0.5); the rest goes to zero
    outside = torch.cat([mask[:a], mask[b + 1 :]])
    assert float(outside.max()) < 0.5 and float(outside.sum()) < 1.0
    assert float(mask[: a - 1].max()) < 0.05 and float(mask[b + 2 :].max()) < 0.05


def test_known_answer_gradcam_is_zero_outside_the_window_and_peaks_on_the_patch():
    frames, a, b = 8, 2, 4
    net = WindowNet(a, b)
    clip = window_clip(frames, a, b)
    out = GradCAM(net, "features", time="interpolate", normalize="none").run(clip, target=[0])
    raw = out["raw"][0]  # (T, H, W): the layer keeps the clip's resolution
    assert raw.shape == (frames, 16, 16)
    outside = [t for t in range(frames) if not a <= t <= b]
    assert raw[outside].abs().max().item() == 0.0
    for t in range(a, b + 1):
        peak = divmod(int(raw[t].argmax()), 16)
        assert 4 <= peak[0] < 8 and 4 <= peak[1] < 8  # the red patch P, not green Q at (10, 2)
        # green Q drives nothing: only the red channel's faint noise shows there
        assert raw[t, 10:14, 2:6].max().item() < 0.1 * raw[t].max().item()
    # time_mean weights cannot tell the frames apart: the red patch R lights up outside
    flat = GradCAM(net, "features", weights="time_mean", normalize="none").run(clip, target=[0])
    assert flat["raw"][0, outside].max().item() > 0


def test_gradcam_hooks_are_removed_and_the_model_restored():
    net = WindowNet(1, 2)
    net.train()
    cam = GradCAM(net, "features")
    cam.run(window_clip(4, 1, 2))
    assert net.training
    assert not net.features._forward_hooks
    assert all(p.requires_grad for p in net.parameters())
    with pytest.raises(StbiasError, match="no module"):
        GradCAM(net, "nope")


# --- batching: B clips at once equal B single-clip runs -------------------------------------------


@pytest.fixture(scope="module")
def tiny_models():
    from stbias.models.clstm import clstm
    from stbias.models.tiny import i3d_tiny

    torch.manual_seed(0)
    return {
        "i3d_tiny": i3d_tiny(num_classes=5).eval(),
        "clstm": clstm(num_classes=5, num_layers=2, hidden_channels=8).eval(),
    }


@pytest.mark.parametrize("name", ["i3d_tiny", "clstm"])
def test_batched_search_equals_single_clip_searches(tiny_models, name):
    model = tiny_models[name]
    clips = torch.rand(3, 3, 8, 32, 32, generator=torch.Generator().manual_seed(1))
    search = TemporalMask(model, iterations=12)
    batched = search.run(clips)
    for i in range(3):
        single = search.run(clips[i : i + 1])
        for key in ("mask", "os", "fs", "rs", "loss"):
            assert torch.allclose(batched[key][i], single[key][0], atol=1e-5), key
        assert torch.equal(batched["initial_mask"][i], single["initial_mask"][0])


def test_per_clip_gradient_equals_its_single_clip_gradient(tiny_models):
    model = tiny_models["i3d_tiny"]
    clips = torch.rand(3, 3, 8, 32, 32, generator=torch.Generator().manual_seed(2))
    search = TemporalMask(model)
    target = torch.tensor([0, 1, 2])
    logits = torch.randn(3, 8, generator=torch.Generator().manual_seed(3))
    p = logits.clone().requires_grad_(True)
    search.loss(clips, torch.sigmoid(p), target).sum().backward()
    for i in range(3):
        q = logits[i : i + 1].clone().requires_grad_(True)
        search.loss(clips[i : i + 1], torch.sigmoid(q), target[i : i + 1]).sum().backward()
        assert torch.allclose(p.grad[i], q.grad[0], atol=1e-6)


def test_the_search_reports_every_iteration_and_the_bar_counts_clips_times_iterations(
    tiny_models,
):
    from types import SimpleNamespace

    from stbias.lit.explain import TemporalMaskModule
    from stbias.lit.progress import PhaseProgressBar

    search = TemporalMask(tiny_models["i3d_tiny"], iterations=3)
    steps = []
    search.run(torch.rand(2, 3, 8, 32, 32), on_step=lambda: steps.append(1))
    assert len(steps) == 3  # once per optimiser step, for the whole batch
    module = TemporalMaskModule(search)
    bar = PhaseProgressBar("searching masks")
    loader = torch.utils.data.DataLoader(list(range(5)), batch_size=2)
    bar.on_test_start(SimpleNamespace(test_dataloaders=[loader]), module)
    assert bar._bar.total == 5 * 3 and bar._bar.unit == "clip-it"
    for count in (2, 2, 1):  # each step advances by the clips of its batch
        module.advance(count)
    bar.on_test_batch_end(None)  # batches do not count
    assert bar._bar.n == 5
    bar.on_test_end(None, module)
    assert module.advance is None


def test_statistics_metric_equals_its_functional_twin(tiny_models):
    search = TemporalMask(tiny_models["i3d_tiny"], iterations=2)
    clips = torch.rand(4, 3, 8, 32, 32, generator=torch.Generator().manual_seed(4))
    out = search.run(clips, labels=torch.tensor([0, 1, 7, 3]))
    metric = TemporalMaskStatistics()
    metric.update(torch.tensor([9, 2]), {k: v[:2] for k, v in out.items()})
    metric.update(torch.tensor([5, 0]), {k: v[2:] for k, v in out.items()})
    got = metric.compute()
    want = temporal_mask_statistics(torch.tensor([9, 2, 5, 0]), out)
    assert got["clips"]["index"].tolist() == [0, 2, 5, 9]
    for key, value in want["clips"].items():
        np.testing.assert_array_equal(got["clips"][key], value)
    assert got["summary"] == want["summary"]
    assert got["clips"]["labels"].tolist() == [
        3,
        1,
        -1,
        0,
    ]  # label 7 is not a class of a 5-way head


# --- Grad-CAM against Captum and its shape handling -----------------------------------------------


CAPTUM_CASES = [
    ("i3d_tiny", "stages.2", {"num_classes": 6}, (8, 32)),
    ("r3d_18", "layer3", {"num_classes": 6}, (8, 32)),
    ("i3d_inception", "Mixed_4f", {"num_classes": 6, "reduced_stride": True}, (8, 32)),
]


def _zoo_model(name: str, kwargs: dict) -> nn.Module:
    torch.manual_seed(0)
    if name == "i3d_tiny":
        from stbias.models.tiny import i3d_tiny

        return i3d_tiny(**kwargs).eval()
    if name == "r3d_18":
        from torchvision.models.video import r3d_18

        return r3d_18(**kwargs).eval()
    from stbias.models.inception_i3d import inception_i3d

    return inception_i3d(**kwargs).eval()


@pytest.mark.parametrize(("name", "path", "kwargs", "shape"), CAPTUM_CASES)
def test_time_mean_maps_equal_captum_layer_gradcam(name, path, kwargs, shape):
    from captum.attr import LayerAttribution, LayerGradCam

    model = _zoo_model(name, kwargs)
    frames, size = shape
    clips = torch.rand(2, 3, frames, size, size, generator=torch.Generator().manual_seed(5))
    target = torch.tensor([1, 4])
    cam = GradCAM(model, path, weights="time_mean", normalize="none")
    ours = cam.run(clips, target=target)
    module = model.get_submodule(path)
    theirs = LayerGradCam(model, module).attribute(clips, target=target, relu_attributions=True)
    assert theirs.shape[1] == 1
    assert torch.allclose(ours["raw"], theirs[:, 0].detach(), atol=1e-5, rtol=1e-4)
    # the documented upsampling: trilinear to the clip, align_corners=False
    up = LayerAttribution.interpolate(theirs.detach(), (frames, size, size), "trilinear")
    assert torch.allclose(ours["maps"], up[:, 0], atol=1e-5, rtol=1e-4)


def test_token_layouts_reshape_to_their_grid():
    b, c, t, h, w = 2, 3, 4, 2, 3
    grid = torch.arange(b * c * t * h * w, dtype=torch.float32).view(b, c, t, h, w)
    thw = grid.permute(0, 2, 3, 4, 1).reshape(b, t * h * w, c)
    cls = torch.cat([torch.full((b, 1, c), -1.0), thw], 1)
    assert torch.equal(to_grid(cls, "tokens_cls", grid=(t, h, w)), grid)
    hwt = grid.permute(0, 3, 4, 2, 1).reshape(b, h * w * t, c)
    assert torch.equal(to_grid(hwt, "tokens", grid=(t, h, w), token_order="hwt"), grid)
    assert torch.equal(to_grid(grid.permute(0, 2, 3, 4, 1), "channels_last"), grid)
    assert infer_grid(8 * 14 * 14, 16, 224, 224) == (8, 14, 14)
    assert infer_grid(8 * 56 * 56, 16, 224, 224) == (8, 56, 56)
    with pytest.raises(StbiasError, match="grid"):
        infer_grid(7, 4, 32, 32)
    with pytest.raises(StbiasError, match="before time or space is pooled"):
        to_grid(torch.zeros(2, 5), "cnn")


def test_per_time_step_weights_upsampling_and_normalisation_by_hand():
    acts = torch.tensor([[1.0, 2.0], [3.0, -1.0]]).view(1, 2, 2, 1, 1).expand(1, 2, 2, 1, 2)
    grads = torch.tensor([[1.0, -1.0], [0.5, 2.0]]).view(1, 2, 2, 1, 1).expand(1, 2, 2, 1, 2)
    maps = gradcam_maps(acts, grads)  # t0: 1*1 + 0.5*3 = 2.5; t1: -1*2 + 2*-1 -> ReLU 0
    assert maps[0, :, 0, 0].tolist() == [2.5, 0.0]
    mean = gradcam_maps(acts, grads, "time_mean")  # w = (0, 1.25): t0 3.75, t1 -> 0
    assert mean[0, :, 0, 0].tolist() == [3.75, 0.0]
    rep = upsample(torch.tensor([[[[1.0]], [[2.0]]]]), (4, 2, 2), "repeat")
    assert rep[0, :, 0, 0].tolist() == [1, 1, 2, 2]
    flat = normalize_maps(torch.zeros(1, 2, 3, 3))
    assert torch.equal(flat, torch.zeros(1, 2, 3, 3))
    x = torch.tensor([[[[0.0, 2.0]], [[1.0, 5.0]]]])
    assert normalize_maps(x, "frame")[0, 1, 0].tolist() == pytest.approx([0, 1])
    assert normalize_maps(x, "clip")[0, 0, 0].tolist() == pytest.approx([0, 0.4])


# --- blobs and the t-test ---------------------------------------------------------------------


def gaussian(size: int, centres: list[tuple[float, float]], sigma: float = 3.0) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    out = np.zeros((size, size))
    for cy, cx in centres:
        out = np.maximum(out, np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2)))
    return out


def test_blobs_are_found_where_the_map_is_bright_and_counted_per_frame():
    size = 64
    maps = np.stack([gaussian(size, [(16, 16), (40, 44)]), np.zeros((size, size))])[None]
    found = frame_blobs(maps)
    assert found["counts"].tolist() == [[2, 0]]
    xy = sorted(zip(found["x"].round().tolist(), found["y"].round().tolist()))
    assert xy == [(16.0, 16.0), (44.0, 40.0)]
    centre = (size - 1) / 2
    want = sorted([np.hypot(16 - centre, 16 - centre), np.hypot(44 - centre, 40 - centre)])
    assert sorted(found["distance"].tolist()) == pytest.approx(want, abs=0.5)
    assert all(s > 5 for s in found["size"])
    # OpenCV's default (dark blobs) finds nothing on a bright map
    assert frame_blobs(maps, {**blob_params(), "blobColor": 0})["counts"].sum() == 0
    with pytest.raises(StbiasError, match="unknown blob detector setting"):
        blob_params({"minAera": 3})


def test_blob_metric_summary_and_welch_test():
    size = 48
    metric = BlobStatistics()
    one = torch.tensor(np.stack([gaussian(size, [(24, 24)])] * 2)[None], dtype=torch.float32)
    two = torch.tensor(
        np.stack([gaussian(size, [(10, 10), (36, 36)]), np.zeros((size, size))])[None],
        dtype=torch.float32,
    )
    metric.update(torch.tensor([3]), one)
    metric.update(torch.tensor([1]), two)
    out = metric.compute()
    assert out["index"].tolist() == [1, 3]
    assert out["counts"].tolist() == [[2, 0], [1, 1]]
    assert out["summary"]["blob_count"]["mean"] == 1.0 and out["summary"]["blob_count"]["n"] == 4
    assert out["summary"]["blob_size"]["n"] == 4
    assert out["params"]["blobColor"] == 255
    from scipy import stats

    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 9.0, 1.0]
    test = welch_ttest(a, b)
    assert test["p"] == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert test["n"] == [4, 5]
    assert welch_ttest([1.0], b)["p"] is None


# --- the tasks ------------------------------------------------------------------------------------

SMALL = [
    "model=i3d_tiny",
    "dataset=brushmnist_small",
    "model.input.frames=8",
    "model.input.size=32",
    "probe.num_clips=4",
    "probe.batch_size=2",
    "metric.figures=1",
    "logger=none",
    "trainer.enable_progress_bar=false",
]


def test_metric_temporal_mask_selects_its_task_and_writes_its_outputs(compose, tmp_path):
    cfg = compose(*SMALL, "metric=temporal_mask", "metric.iterations=3", run_dir=tmp_path)
    assert cfg.task.name == "temporal_mask"
    record, _ = run_task(cfg)
    assert record["num_clips"] == 4 and record["settings"]["lr"] == 0.2
    assert len(record["clips"]) == 4
    for name in ("results.json", "results.csv", "masks.npz", "table4.png"):
        assert (tmp_path / name).is_file(), name
    assert len(list(tmp_path.glob("mask_*.png"))) == 1
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["summary"]["counts"]["clips"] == 4
    with np.load(tmp_path / "masks.npz") as data:
        assert data["mask"].shape == (4, 8)
        assert data["index"].tolist() == [c["index"] for c in saved["clips"]]


def test_metric_gradcam_takes_a_layer_alias_and_writes_maps_blobs_and_overlays(compose, tmp_path):
    cfg = compose(
        *SMALL,
        "metric=gradcam",
        "layer=res3",
        "metric.label_key=shape_label",
        "logger=csv",
        run_dir=tmp_path,
    )
    assert cfg.task.name == "gradcam"
    record, _ = run_task(cfg)
    logged = next(tmp_path.glob("csv/*/metrics.csv")).read_text()
    assert "gradcam/blob_count_mean" in logged
    assert record["layer"] == "res3" and record["layer_shape"] == [4, 4, 4]
    for name in ("results.json", "gradcam.npz", "blobs.npz", "blobs.csv", "table3.png"):
        assert (tmp_path / name).is_file(), name
    assert len(list(tmp_path.glob("gradcam_*.gif"))) == 1
    with np.load(tmp_path / "gradcam.npz") as data:
        assert data["maps"].shape == (4, 8, 32, 32) and data["maps"].dtype == np.float16
    assert record["blob_params"]["blobColor"] == 255
    assert record["summary"]["blob_count"]["n"] == 4 * 8


def test_gradcam_refuses_an_unknown_layer_naming_the_valid_ones(compose, tmp_path):
    cfg = compose(*SMALL, "metric=gradcam", "layer=res9", run_dir=tmp_path)
    with pytest.raises(StbiasError, match="unknown layer 'res9'; layers of i3d_tiny: stem, res2"):
        run_task(cfg)


def _run_py(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "WANDB_MODE": "offline", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@pytest.mark.slow
def test_two_ddp_processes_explain_every_clip_once_as_one_process(compose, tmp_path):
    args = ["metric=temporal_mask", "metric.iterations=3", "probe.num_clips=5"]
    (tmp_path / "one").mkdir()
    a, _ = run_task(compose(*SMALL, *args, run_dir=tmp_path / "one"))
    two = _run_py(tmp_path, *SMALL, *args, "trainer=ddp_cpu", f"hydra.run.dir={tmp_path / 'two'}")
    assert two.returncode == 0, two.stderr[-3000:]
    b = json.loads((tmp_path / "two" / "results.json").read_text())
    assert b["config"]["trainer"]["devices"] == 2
    assert [c["index"] for c in a["clips"]] == [c["index"] for c in b["clips"]]
    for x, y in zip(a["clips"], b["clips"]):
        assert x["length"] == y["length"]
        assert x["os"] == pytest.approx(y["os"], abs=1e-5)
        assert x["fs"] == pytest.approx(y["fs"], abs=1e-4)
    assert a["summary"]["counts"] == b["summary"]["counts"]


def test_parity_options_reach_the_search_and_bad_values_stop_early(compose, tmp_path):
    cfg = compose(
        *SMALL,
        "metric=temporal_mask",
        "metric.iterations=1",
        "probe.num_clips=2",
        "metric.figures=0",
        "metric.init=reference",
        "metric.tv_weights=reference",
        "metric.reverse_blend=reference",
        run_dir=tmp_path,
    )
    record, _ = run_task(cfg)
    settings = record["settings"]
    assert (settings["init"], settings["tv_weights"], settings["reverse_blend"]) == (
        "reference",
    ) * 3
    bad = compose(*SMALL, "metric=temporal_mask", "metric.init=centre", run_dir=tmp_path / "bad")
    # refused when the config is validated, before the model is built
    with pytest.raises(StbiasError, match="metric.init='centre' is not valid; metric.init takes"):
        run_task(bad)


def test_tables_are_drawn_from_result_files(tmp_path):
    from stbias.plotting.explain import TABLE3, TABLE4, table4
    from stbias.results import explanation_statistics

    runs = {}
    for label, lengths in (("A", [2, 4, 6]), ("B", [8, 10, 12])):
        folder = tmp_path / label
        folder.mkdir()
        clips = {
            "length": np.array(lengths),
            "drop_ratio": np.array([1.0, np.nan, 3.0]),
            "drop_ratio_kept": np.array([True, False, True]),
            "drop_difference": np.array([0.1, 0.2, 0.3]),
        }
        np.savez(folder / "masks.npz", **clips)
        (folder / "results.json").write_text(
            json.dumps(
                {
                    "summary": {
                        "mask_length": {"mean": float(np.mean(lengths)), "std": 1.0, "n": 3},
                        "drop_ratio": {"mean": 2.0, "std": 1.0, "n": 2},
                        "drop_difference": {"mean": 0.2, "std": 0.08, "n": 3},
                    }
                }
            )
        )
        runs[label] = str(folder)
    summaries, tests = explanation_statistics(runs, "temporal_mask", [k for k, _ in TABLE4])
    fig = table4(summaries, tests)
    texts = [c.get_text().get_text() for c in fig.axes[0].tables[0].get_celld().values()]
    assert "4.0 ± 1.0 (n = 3)" in texts and "10.0 ± 1.0 (n = 3)" in texts
    assert tests["mask_length"]["n"] == [3, 3] and tests["drop_ratio"]["n"] == [2, 2]
    assert tests["mask_length"]["p"] == pytest.approx(welch_ttest([2, 4, 6], [8, 10, 12])["p"])
    for label in runs:
        np.savez(
            Path(runs[label]) / "blobs.npz",
            counts=np.array([[1, 2]]),
            size=np.array([3.0, 4.0, 5.0]),
            distance=np.array([1.0, 2.0, 3.0]),
        )
    _, tests = explanation_statistics(runs, "gradcam", [k for k, _ in TABLE3])
    assert tests["blob_count"]["n"] == [2, 2] and tests["blob_size"]["n"] == [3, 3]


@pytest.mark.slow
def test_experiment_manttari_reduced_writes_tables_1_3_and_4(tmp_path):
    run = _run_py(
        tmp_path,
        "experiment=manttari",
        "task.input.size=32",
        "task.input.frames=8",
        "task.train.clips=32",
        "task.train.val_clips=16",
        "task.train.max_epochs=1",
        "task.eval_clips=16",
        "task.temporal_mask.num_clips=4",
        "+task.temporal_mask.iterations=3",
        "task.gradcam.num_clips=4",
        f"task.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "run"
    for name in ("table1", "table3", "table3_2", "table4"):
        assert (out / f"{name}.csv").is_file() and (out / f"{name}.png").is_file(), name
    record = json.loads((out / "results.json").read_text())
    assert list(record["runs"]) == ["I3D", "C-LSTM"]
    assert record["tables"]["table4"]["tests"]["mask_length"]["n"] == [4, 4]
    for label, r in record["runs"].items():
        assert 0.0 <= r["table1"]["acc_reversed"] <= 1.0 and r["table1"]["clips"] == 16
        assert (out / label / "temporal_mask" / "masks.npz").is_file()
    assert "Table 4: temporal masks" in run.stdout and "Welch t-test" in run.stdout
    # the tables are drawn again from the run's files alone
    from stbias.studies.manttari import redraw

    again = redraw(str(out))
    assert again["tables"]["table4"]["summaries"] == record["tables"]["table4"]["summaries"]
    # the same models as user checkpoints: nothing is trained, Table 1 is the same
    given = {label: r["explained_checkpoint"] for label, r in record["runs"].items()}
    again = _run_py(
        tmp_path,
        "experiment=manttari",
        "task.input.size=32",
        "task.input.frames=8",
        "task.eval_clips=16",
        "task.temporal_mask.num_clips=4",
        "+task.temporal_mask.iterations=3",
        "task.gradcam.num_clips=4",
        f"task.checkpoints.i3d={given['I3D']}",
        f"task.checkpoints.clstm={given['C-LSTM']}",
        f"task.cache_dir={tmp_path / 'cache2'}",
        f"hydra.run.dir={tmp_path / 'run2'}",
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert not (tmp_path / "cache2").exists()
    mine = json.loads((tmp_path / "run2" / "results.json").read_text())
    for label, r in mine["runs"].items():
        assert r["train"] == {"checkpoint": given[label], "user_checkpoint": True}
        assert r["table1"] == record["runs"][label]["table1"]


def test_manttari_checkpoints_name_a_model_and_a_file(compose, tmp_path):
    from stbias.studies.manttari import user_checkpoints

    ckpt = tmp_path / "m.ckpt"
    ckpt.write_bytes(b"")
    cfg = compose("experiment=manttari", f"task.checkpoints.i3d={ckpt}")
    assert user_checkpoints(cfg) == {"I3D": str(ckpt)}
    with open_dict(cfg):
        cfg.task.checkpoints = {"clstm": str(ckpt), "C-LSTM": str(ckpt)}
    with pytest.raises(StbiasError, match="names model 'C-LSTM' twice"):
        user_checkpoints(cfg)
    with open_dict(cfg):
        cfg.task.checkpoints = {"x3d": str(ckpt)}
    with pytest.raises(StbiasError, match=r"task.checkpoints.x3d: no model 'x3d'.*valid keys: "):
        user_checkpoints(cfg)
    with open_dict(cfg):
        cfg.task.checkpoints = {"clstm": str(tmp_path / "none.ckpt")}
    with pytest.raises(StbiasError, match="none.ckpt: no such file"):
        user_checkpoints(cfg)


def test_the_python_example_in_the_docs_runs():
    text = (ROOT / "docs" / "explanations.md").read_text()
    block = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(block, "docs/explanations.md", "exec"), namespace)  # noqa: S102
    assert namespace["masks"]["mask"].shape == (2, 8)
    assert namespace["cam"]["maps"].shape == (2, 8, 32, 32)
    assert namespace["blobs"]["counts"].shape == (2, 8)


@pytest.mark.gpu
def test_mask_search_and_gradcam_on_a_gpu_match_the_cpu(tiny_models):
    model = tiny_models["i3d_tiny"]
    clips = torch.rand(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(6))
    cpu = TemporalMask(model, iterations=10).run(clips)
    cam_cpu = GradCAM(model, "stages.2").run(clips)
    model.cuda()
    try:
        gpu = TemporalMask(model, iterations=10).run(clips.cuda())
        cam_gpu = GradCAM(model, "stages.2").run(clips.cuda())
    finally:
        model.cpu()
    # cuDNN may use TF32 for convolutions: agreement to about 1e-3 relative, not 1e-6
    assert torch.allclose(gpu["mask"].cpu(), cpu["mask"], atol=1e-2)
    assert torch.allclose(cam_gpu["raw"].cpu(), cam_cpu["raw"], atol=1e-3, rtol=1e-2)


def test_inception_width_and_batch_norm_momentum_options():
    from stbias.models.inception_i3d import inception_i3d

    narrow = inception_i3d(num_classes=3, width=0.25, bn_momentum=0.1)
    assert narrow.block_channels["Mixed_5c"] == 96 + 96 + 32 + 32 == narrow.num_features
    assert {m.momentum for m in narrow.modules() if isinstance(m, nn.BatchNorm3d)} == {0.1}
    assert narrow.eval()(torch.rand(1, 3, 8, 32, 32)).shape == (1, 3)
    with pytest.raises(StbiasError, match="width"):
        inception_i3d(num_classes=3, width=0)


# --- Grad-CAM normalisation: free of the score's scale --------------------------------------------


class _Scaled(nn.Module):
    """A classifier whose logits are multiplied by ``scale`` (predictions unchanged)."""

    def __init__(self, model: nn.Module, scale: float) -> None:
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.scale


def _old_normalize(maps: torch.Tensor) -> torch.Tensor:
    # the absolute-epsilon normalisation stbias had before, for the can-fail check below
    low = maps.amin(dim=(2, 3), keepdim=True)
    high = maps.amax(dim=(2, 3), keepdim=True)
    return (maps - low) / (high - low + 1e-8)


def test_scaling_the_logits_by_1e_8_leaves_maps_and_blobs_unchanged(tiny_models):
    model = tiny_models["i3d_tiny"]
    clips = torch.rand(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(6))
    target = torch.tensor([1, 3])
    plain_out = GradCAM(model, "stages.1").run(clips, target=target)
    small_out = GradCAM(_Scaled(model, 1e-8), "model.stages.1").run(clips, target=target)
    # the raw maps do scale (so the normalisation is what keeps the maps equal)
    peak = plain_out["raw"].amax()
    assert 0.5e-8 * peak < small_out["raw"].amax() < 2e-8 * peak
    assert torch.allclose(small_out["maps"], plain_out["maps"], atol=1e-5)
    blobs, blobs_small = frame_blobs(plain_out["maps"]), frame_blobs(small_out["maps"])
    assert blobs["counts"].sum() > 0
    np.testing.assert_array_equal(blobs_small["counts"], blobs["counts"])
    np.testing.assert_allclose(blobs_small["size"], blobs["size"], atol=0.5)
    np.testing.assert_allclose(blobs_small["distance"], blobs["distance"], atol=0.5)
    # an absolute epsilon does not pass this test: it squashes the small maps
    upsampled = upsample(small_out["raw"], clips.shape[2:])
    assert float(_old_normalize(upsampled).amax()) < 0.9


def test_normalisation_is_scale_free_and_flat_frames_become_zero():
    maps = torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(7))
    maps[0, 1] = 0.0  # a time step the score does not depend on
    maps[1, 2] = 0.25
    maps[1, 2, 0, :2] = torch.nextafter(torch.tensor(0.25), torch.tensor(1.0))  # rounding apart
    for mode in ("frame", "clip"):
        want = normalize_maps(maps, mode)
        for scale in (1e-30, 1e-8, 3.0, 1e12):
            assert torch.allclose(normalize_maps(maps * scale, mode), want, atol=1e-6)
    got = normalize_maps(maps)
    assert torch.equal(got[0, 1], torch.zeros(5, 5)) and torch.equal(got[1, 2], torch.zeros(5, 5))
    assert got.isfinite().all() and float(got[0, 0].amax()) == 1.0
    # with eps = 0 only an exactly flat frame is flat
    assert float(normalize_maps(maps, eps=0.0)[1, 2].amax()) == 1.0
    for bad in (-1e-6, 1.0, float("nan"), "small"):
        with pytest.raises(StbiasError, match="relative tolerance in \\[0, 1\\)"):
            normalize_maps(maps, eps=bad)


def test_per_time_step_and_time_mean_weights_coincide_before_global_pooling():
    torch.manual_seed(8)
    net = nn.Sequential(
        nn.Conv3d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool3d(1),
        nn.Flatten(),
        nn.Linear(6, 4),
    ).eval()
    clips = torch.rand(2, 3, 6, 8, 8, generator=torch.Generator().manual_seed(9))
    per_step = GradCAM(net, "1", normalize="none").run(clips, target=[1, 2])["raw"]
    mean = GradCAM(net, "1", weights="time_mean", normalize="none").run(clips, target=[1, 2])
    assert per_step.amax() > 0
    torch.testing.assert_close(per_step, mean["raw"], atol=1e-6, rtol=1e-5)
    # a temporal convolution after the layer mixes time steps unevenly: the weights differ
    deeper = nn.Sequential(*net[:2], nn.Conv3d(6, 6, (3, 1, 1)), *net[2:]).eval()
    per_step = GradCAM(deeper, "1", normalize="none").run(clips, target=[1, 2])["raw"]
    mean = GradCAM(deeper, "1", weights="time_mean", normalize="none").run(clips, target=[1, 2])
    assert not torch.allclose(per_step, mean["raw"], atol=1e-4)


def test_manttari_table2_and_fig4_draw_the_given_numbers():
    import matplotlib

    from stbias.plotting.manttari import fig4, table2

    fig = table2(["a", "b"], {"I3D": [0.25, 0.5], "C-LSTM": [0.125, 1.0]}, title="Table 2")
    texts = [c.get_text().get_text() for ax in fig.axes for c in ax.tables[0].get_celld().values()]
    assert {"Class", "I3D F1", "C-LSTM F1", "0.25", "0.50", "0.12", "1.00"} <= set(texts)
    rng = np.random.default_rng(0)
    samples = {
        "I3D": {"blob_count": np.ones(40), "mask_length": rng.normal(6, 1, 50)},
        "C-LSTM": {"blob_count": np.full(30, 3.0), "mask_length": rng.normal(10, 1, 50)},
    }
    fig = fig4(samples, title="Fig. 4", bins=10)
    count = fig.axes[0]
    assert count.get_title() == "Blob count" and count.get_legend() is not None
    handles, names = count.get_legend_handles_labels()
    assert names == ["I3D", "C-LSTM"]
    assert [h.get_facecolor()[:3] for h in handles] == [
        matplotlib.colors.to_rgb("tab:orange"),
        matplotlib.colors.to_rgb("tab:blue"),
    ]
    # normalised histograms: each model's bar areas sum to 1 on a shared set of bins
    heights = np.array([p.get_height() for p in count.patches]).reshape(2, 10)
    widths = np.array([p.get_width() for p in count.patches]).reshape(2, 10)
    np.testing.assert_allclose((heights * widths).sum(1), [1.0, 1.0])
    assert heights[0].argmax() == 0 and heights[1].argmax() == 9  # ones, then threes
    assert "n=40\nn=30" in [t.get_text() for t in count.texts]


def _fake_explanation(folder: Path, task: str, model: str, samples: dict) -> None:
    from stbias.io import write_json

    folder.mkdir(parents=True)
    summary = {
        key: {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v), "ci": [0.0, 1.0]}
        for key, v in samples.items()
    }
    write_json(str(folder / "results.json"), {"task": task, "model": model, "summary": summary})
    if task == "gradcam":
        np.savez(
            folder / "blobs.npz",
            counts=np.asarray(samples["blob_count"]).reshape(-1, 2),
            size=np.asarray(samples["blob_size"], dtype=float),
            distance=np.asarray(samples["center_distance"], dtype=float),
        )
    else:
        ratio = np.asarray(samples["drop_ratio"], dtype=float)
        np.savez(
            folder / "masks.npz",
            length=np.asarray(samples["mask_length"]),
            drop_ratio=np.concatenate([ratio, [99.0]]),  # one clip the ratio's filter left out
            drop_ratio_kept=np.array([True] * len(ratio) + [False]),
            drop_difference=np.asarray(samples["drop_difference"], dtype=float),
        )


def test_compare_of_two_explanation_runs_gives_welch_tests(compose, tmp_path, monkeypatch):
    from scipy.stats import ttest_ind

    cams = {
        "i3d": {
            "blob_count": [1, 1, 2, 1],
            "blob_size": [30.0, 35, 40],
            "center_distance": [5.0, 6, 7],
        },
        "clstm": {
            "blob_count": [3, 4, 2, 5, 3, 4],
            "blob_size": [10.0, 12, 9, 15],
            "center_distance": [9.0, 12, 15, 11],
        },
    }
    masks = {
        "i3d": {
            "mask_length": [6, 5, 7],
            "drop_ratio": [1.0, 2, 4],
            "drop_difference": [0.1, 0.2, 0.4],
        },
        "clstm": {
            "mask_length": [9, 11, 10, 12],
            "drop_ratio": [0.5, 0.7, 1],
            "drop_difference": [0.0, 0.1, 0.05, 0.2],
        },
    }
    for model in ("i3d", "clstm"):
        _fake_explanation(tmp_path / "cam" / model, "gradcam", model, cams[model])
        _fake_explanation(tmp_path / "mask" / model, "temporal_mask", model, masks[model])
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(out)
    runs = ",".join(str(tmp_path / d / m) for d in ("cam", "mask") for m in ("i3d", "clstm"))
    record, _ = run_task(compose("task=compare", f"runs=[{runs}]", "logger=none"))
    assert {"gradcam_table", "temporal_mask_table"} <= set(record["figures"])
    for task, samples in (("gradcam", cams), ("temporal_mask", masks)):
        tests = record["explanations"][task]["tests"]
        first, second = (label.split()[0] for label in record["explanations"][task]["runs"])
        for key in samples["i3d"]:
            a = np.asarray(samples[first][key], dtype=float)
            b = np.asarray(samples[second][key], dtype=float)
            assert tests[key]["p"] == pytest.approx(ttest_ind(a, b, equal_var=False).pvalue)
            assert tests[key]["n"] == [len(a), len(b)]
    assert (out / "gradcam_table.png").stat().st_size > 5000
    saved = json.loads((out / "results.json").read_text())
    assert sorted(saved["explanations"]["gradcam"]["runs"].items()) == [
        (f"{m} ({m})", str(tmp_path / "cam" / m)) for m in ("clstm", "i3d")
    ]
