"""StaticDropout and its baselines, the checkpoint series and bias over training, the experiment."""

from __future__ import annotations

import csv
import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from omegaconf import open_dict
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import Dataset

from stbias.data.pfm_mixed import MixedCuePFM
from stbias.errors import StbiasError
from stbias.lit.classifier import VideoClassifier
from stbias.lit.series import parse_every, resolve_series, series_callbacks
from stbias.lit.static_dropout import (
    ChannelDropout,
    ProbeSetup,
    StaticDropout,
    StaticDropoutSettings,
    evaluate,
    probe_units,
    static_units,
)
from stbias.lit.train_data import ClassificationData
from stbias.metrics import score_pairs
from stbias.models.inputs import InputSpec
from stbias.plotting.bias_over_training import bias_over_training
from stbias.plotting.static_dropout import figure, summarize, table
from stbias.results import static_dropout_rows
from stbias.runner import run_task
from stbias.stylization.base import Stylizer
from stbias.stylization.pairs import PairSampler, make_pair_views
from stbias.tasks import train
from stbias.tasks.probe_series import settling

ROOT = Path(__file__).resolve().parents[1]
# the known answer of the hand-built model: unit -> class
KNOWN = ["static", "dynamic", "joint", "static", "dynamic"]
STATIC = [i for i, c in enumerate(KNOWN) if c == "static"]
TINY = [
    "model=i3d_tiny",
    "model.input.frames=8",
    "model.input.size=32",
    "logger=none",
    "trainer.enable_progress_bar=false",
    "trainer.num_sanity_val_steps=0",
]


# --- a hand-built model whose static, dynamic and joint units are known ---------------------------


class KnownData(Dataset):
    """8-frame clips: channel 0 holds a per-clip level ``A`` (appearance), channel 1 a ramp
    ``b + s * t`` (level ``b``, signed speed ``s``: the motion), channel 2 is constant."""

    def __init__(self, n: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.a = rng.uniform(0.1, 0.9, n)
        self.b = rng.uniform(0.3, 0.7, n)
        self.s = rng.uniform(-1, 1, n)

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, i: int) -> dict:
        t = np.linspace(-1, 1, 8)
        frames = np.zeros((8, 4, 4, 3))
        frames[..., 0] = self.a[i]
        frames[..., 1] = (self.b[i] + 0.2 * self.s[i] * t)[:, None, None]
        frames[..., 2] = 0.5
        video = torch.from_numpy(np.round(frames * 255).astype(np.uint8))
        return {"video": video, "label": int(self.a[i] > 0.5), "index": i}


class ScrambleAppearance(Stylizer):
    """Style ``k`` maps channel 0 (appearance) through its own scrambling; motion is untouched."""

    name = "scramble"
    styles = ("s0", "s1", "s2", "s3")

    def _stylize(self, clip01, styles, **context):
        out = clip01.clone()
        for b, k in enumerate(styles):
            out[b, 0] = torch.frac(clip01[b, 0] * (7.3 + 3.1 * k) + 0.37 * k)
        return out


class KnownUnits(nn.Module):
    """Five units: appearance level, speed, ramp level, 2 x appearance + 0.1, minus speed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(3, 4))  # (B, C, T)
        ramp = torch.linspace(-1, 1, m.shape[2], device=x.device)
        app, speed, level = m[:, 0].mean(1), (m[:, 1] * ramp).mean(1), m[:, 1].mean(1)
        return torch.stack([app, speed, level, 2 * app + 0.1, -speed], 1)


class KnownNet(nn.Module):
    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.pool = KnownUnits()
        self.proj = nn.Linear(5, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pool(x))


SPEC = InputSpec(frames=8, sampling_rate=1, size=4, mean=(0.0,) * 3, std=(1.0,) * 3)


def known_setup(n: int = 48, val: int = 16) -> ProbeSetup:
    return ProbeSetup(
        spec=SPEC,
        sampler=PairSampler(ScrambleAppearance(), seed=0),
        probe_clips=KnownData(n),
        layers={"pool": "pool"},
        channels={"pool": 5},
        batch_size=16,
        eval_batch_size=8,
        val_set=KnownData(val, seed=1),
    )


def settings(**kw) -> StaticDropoutSettings:
    return StaticDropoutSettings(**{"p": 0.5, "layer": "pool", "path": "pool", **kw})


def test_the_hand_built_model_has_the_known_unit_classes_through_the_probe():
    setup = known_setup()
    report = probe_units(KnownNet(), setup, setup.layers, 0.5)["pool"]
    assert report["units"] == {"dynamic": 2, "static": 2, "joint": 1, "residual": 0, "dead": 0}
    assert np.flatnonzero(static_units(report, "static", 0.5)).tolist() == STATIC
    assert np.flatnonzero(static_units(report, "static_joint", 0.5)).tolist() == [0, 2, 3]
    # the same pairs scored by the functional twin on features computed apart from the probe
    clips = torch.stack([setup.probe_clips[i]["video"] for i in range(len(setup.probe_clips))])
    views = make_pair_views(
        clips.permute(0, 4, 1, 2, 3).float() / 255, setup.sampler.stylizer, 0, seed=0
    )
    pool = KnownUnits()
    z = {k: pool(views[k]) for k in ("anchor", "static", "dynamic")}
    twin = score_pairs(
        torch.cat([z["anchor"], z["anchor"]]),
        torch.cat([z["static"], z["dynamic"]]),
        ["static"] * len(clips) + ["dynamic"] * len(clips),
    )
    for factor in ("dynamic", "static"):
        np.testing.assert_allclose(
            report["unit_scores"][factor], twin["unit_scores"][factor], atol=1e-6
        )


def fit_known(mode: str, epochs: int = 2, **kw) -> tuple[StaticDropout, KnownNet, list]:
    """Train the hand-built net with StaticDropout; record pool outputs before and after it."""
    pl.seed_everything(0, verbose=False)
    net = KnownNet()
    setup = known_setup()
    callback = StaticDropout(settings(mode=mode, **kw), setup)
    seen: list = []
    raw: dict = {}
    net.pool.register_forward_hook(lambda m, a, out: raw.update(out=out.detach().clone()))

    # (training, before, after) of every forward but those of the end-of-training measurements
    # that zero units on purpose (they add a third hook)
    def record(module, args):
        if len(net.pool._forward_hooks) <= 2:
            seen.append((module.training, raw["out"], args[0].detach().clone()))

    net.proj.register_forward_pre_hook(record)
    module = VideoClassifier(net, SPEC, 2, functools.partial(torch.optim.SGD, lr=0.1))
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
        callbacks=[callback],
    )
    data = ClassificationData(KnownData(48), KnownData(16, seed=1), batch_size=8)
    trainer.fit(module, datamodule=data)
    return callback, net, seen


def test_static_mode_drops_exactly_the_probes_static_units_with_inverted_scaling():
    callback, net, seen = fit_known("static")
    assert [h["static_set"] for h in callback.history] == [STATIC, STATIC]
    assert [h["epoch"] for h in callback.history] == [0, 1]
    assert callback.history[0]["jaccard"] is None and callback.history[1]["jaccard"] == 1.0
    dropped_any = np.zeros(5, dtype=bool)
    kept_any = np.zeros(5, dtype=bool)
    for training, before, after in seen:
        if not training:
            torch.testing.assert_close(after, before, rtol=0, atol=0)  # validation: untouched
            continue
        others = [i for i in range(5) if i not in STATIC]
        torch.testing.assert_close(after[:, others], before[:, others], rtol=0, atol=0)
        s = after[:, STATIC]
        zero = s == 0
        torch.testing.assert_close(s[~zero], 2.0 * before[:, STATIC][~zero])  # 1 / (1 - p)
        dropped_any[STATIC] |= zero.any(0).numpy()
        kept_any[STATIC] |= (~zero).any(0).numpy()
    assert dropped_any[STATIC].all() and kept_any[STATIC].all()
    # after fit the dropout hook is gone: the network is the one that was built
    assert len(net.pool._forward_hooks) == 1  # the test's own recorder


@pytest.mark.parametrize("layout,shape", [("cnn", (6, 5, 4, 3, 3)), ("tokens", (6, 7, 5))])
def test_a_dropped_channel_is_dropped_at_every_position_of_a_sample(layout, shape):
    drop = ChannelDropout(5, layout)
    drop.set(np.array([True, False, True, True, False]), 0.5)
    torch.manual_seed(1)
    x = torch.rand(shape) + 0.5
    ratio = drop(x) / x
    axis = 1 if layout == "cnn" else -1
    per_channel = ratio.movedim(axis, 1).flatten(2)  # (B, C, positions)
    assert torch.all(per_channel == per_channel[..., :1])  # one factor per sample and channel
    factor = per_channel[..., 0]
    assert torch.all(factor[:, [1, 4]] == 1)
    assert set(factor[:, [0, 2, 3]].flatten().tolist()) == {0.0, 2.0}
    drop.eval()
    assert torch.equal(drop(x), x)


def test_mode_all_drops_the_matched_expected_number_over_every_unit():
    callback, _, seen = fit_known("all", epochs=1)
    entry = callback.history[0]
    assert entry["dropped_units"] == 5 and entry["set_size"] == len(STATIC)
    assert entry["drop_probability"] == pytest.approx(0.5 * len(STATIC) / 5)
    assert entry["expected_dropped"] == pytest.approx(0.5 * len(STATIC))
    # the expected number holds empirically: per sample, p·|S| dropped units on average
    drop = ChannelDropout(5)
    drop.set(np.ones(5, dtype=bool), entry["drop_probability"])
    torch.manual_seed(0)
    f = drop.factor(200_000, torch.device("cpu"), torch.float32)
    assert float((f == 0).sum(1).float().mean()) == pytest.approx(0.5 * len(STATIC), abs=0.01)
    torch.testing.assert_close(f[f > 0], torch.full_like(f[f > 0], 1 / (1 - 0.2)))
    assert torch.allclose(f.mean(0), torch.ones(5), atol=0.01)  # inverted scaling: mean 1
    assert any((after == 0).any() for training, _, after in seen if training)


def test_mode_random_draws_as_many_units_again_at_every_refresh():
    callback, _, _ = fit_known("random", epochs=3)
    sets = [h["dropped_set"] for h in callback.history]
    assert all(len(s) == len(STATIC) for s in sets)
    assert [h["static_set"] for h in callback.history] == [STATIC] * 3
    assert len({tuple(s) for s in sets}) > 1  # redrawn (seeded by the run's seed and refresh)
    again, _, _ = fit_known("random", epochs=3)
    assert [h["dropped_set"] for h in again.history] == sets


def test_refresh_every_and_init_start():
    callback, _, _ = fit_known("static", epochs=3, refresh_every=2, init="start")
    assert [h["epoch"] for h in callback.history] == [0, 2]
    state = callback.state_dict()
    fresh = StaticDropout(callback.settings, callback.setup_)
    fresh.load_state_dict(state)
    assert fresh.history == callback.history and fresh.dropout.q == 0.5
    assert fresh.dropout.dropped.nonzero().flatten().tolist() == STATIC


def test_inference_is_unaffected():
    net = KnownNet()
    x = torch.rand(6, 3, 8, 4, 4)
    reference = net(x).detach()
    callback = StaticDropout(settings(p=0.9), known_setup())
    callback.dropout.set(np.ones(5, dtype=bool), 0.9)
    module = VideoClassifier(net, SPEC, 2, torch.optim.SGD)
    callback.setup(None, module, "fit")
    net.eval()
    torch.testing.assert_close(net(x), reference, rtol=0, atol=0)
    net.train()
    assert not torch.equal(net(x), reference)  # it does act in training
    callback.teardown(None, module, "fit")
    torch.testing.assert_close(net(x), reference, rtol=0, atol=0)
    assert not net.pool._forward_hooks


def test_zeroing_the_static_units_at_test_time_and_shuffled_frames():
    setup = known_setup()
    net = KnownNet()
    with torch.no_grad():
        net.proj.weight.copy_(torch.tensor([[-1.0, 0, 0, 0, 0], [1.0, 0, 0, 0, 0]]))
        net.proj.bias.copy_(torch.tensor([0.5, -0.5]))
    plain = evaluate(net, setup)
    assert plain["acc"] == 1.0  # the label is appearance > 0.5
    mask = np.zeros(5, dtype=bool)
    mask[STATIC] = True
    zeroed = evaluate(net, setup, zero=("pool", mask))
    labels = [setup.val_set[i]["label"] for i in range(len(setup.val_set))]
    assert zeroed["acc"] == pytest.approx(1 - np.mean(labels))  # every clip -> class 0
    assert evaluate(net, setup, shuffle=True)["acc"] == 1.0  # appearance ignores frame order


# --- settings -------------------------------------------------------------------------------------


def train_cfg(compose, tmp_path, *overrides):
    cfg = compose("task=train", *TINY, *overrides)
    with open_dict(cfg):
        cfg.train.output_dir = str(tmp_path)
    return cfg


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.static_dropout.p=1.0", "train.static_dropout.p=1.0 is outside [0, 1)"),
        ("train.static_dropout.p=-0.1", "train.static_dropout.p=-0.1 is outside [0, 1)"),
        (
            "train.static_dropout.layer=res9",
            "layer='res9' is not a layer of i3d_tiny; layers: stem, res2",
        ),
        ("train.static_dropout.refresh_every=0", "refresh_every=0; give a number of epochs >= 1"),
        ("train.static_dropout.mode=some", "mode='some' is not valid; valid: static, all, random"),
        ("train.static_dropout.units=dyn", "units='dyn' is not valid; valid: static, static_joint"),
        ("train.checkpoint_every=0", "train.checkpoint_every=0 is not valid"),
        ("train.checkpoint_every=3hours", "'3hours' is not valid"),
    ],
)
def test_bad_settings_stop_before_anything_is_built(
    compose, tmp_path, override, message, monkeypatch
):
    built = []
    monkeypatch.setattr(train, "build_dataset", lambda *a, **k: built.append(1))
    with pytest.raises(StbiasError, match=".*") as err:
        train.run(train_cfg(compose, tmp_path, override))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not built


@pytest.mark.slow
def test_a_bad_setting_is_one_line_on_the_command_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "task=train", "model=i3d_tiny"]
        + ["train.static_dropout.p=1.5", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "stbias: error: train.static_dropout.p=1.5 is not valid; train.static_dropout.p takes a "
        "number in [0, 1) (0 turns StaticDropout off)"
    ]


def test_checkpoint_every_values():
    assert parse_every(None) is None
    assert parse_every(3) == (3, "epochs") and parse_every("3 epochs") == (3, "epochs")
    assert parse_every("1epoch") == (1, "epochs") and parse_every("200 steps") == (200, "steps")
    for bad in (0, -2, "x", "2 hours", True):
        with pytest.raises(StbiasError):
            parse_every(bad)


# --- the data ---------------------------------------------------------------------------------


def test_mixed_cue_pfm_has_appearance_and_motion_only_classes():
    data = MixedCuePFM(num_groups=3, num_samples=36, num_frames=4, size=24)
    assert data.num_classes == 6 and data.motion_only_classes == [3, 4, 5]
    samples = [data[i] for i in range(36)]
    assert [s["label"] for s in samples] == [i % 6 for i in range(36)]
    assert [s["index"] for s in samples] == list(range(36))
    for c in range(6):
        mine = [s for s in samples if s["label"] == c]
        places = {s["place_label"] for s in mine}
        motions = {s["shape_label"] for s in mine}
        if c < 3:  # one place per class, every motion
            assert places == {c + 1} and motions == {0, 1, 2}
            assert all(s["motion_only"] == 0 for s in mine)
        else:  # one shared place, one motion per class
            assert places == {0} and motions == {c - 3}
            assert all(s["motion_only"] == 1 for s in mine)
    assert len({s["id"] for s in samples}) == 36
    assert data.clip_info(7) == {"id": samples[7]["id"], "label": 1}


# --- bias over training -----------------------------------------------------------------------


def probe_cfg(compose, tmp_path, folder, *overrides):
    return compose(
        *TINY,
        "probe.num_clips=8",
        "probe.batch_size=8",
        f"probe.cache_dir={tmp_path / 'cache'}",
        *overrides,
        run_dir=folder,
    )


@pytest.mark.slow
def test_a_checkpoint_series_is_probed_once_each_then_read_from_the_cache(
    compose, tmp_path, monkeypatch
):
    # the documented pair of commands, shrunk: train keeping a checkpoint per epoch, then probe
    run_dir = tmp_path / "train"
    shrink = ["train.train_clips=32", "train.val_clips=8", "train.batch_size=8"]
    cfg = train_cfg(
        compose, run_dir, "experiment=bias_over_training", *shrink, "trainer.max_epochs=2"
    )
    record, _ = train.run(cfg)
    names = sorted(p.name for p in (run_dir / "checkpoints" / "series").iterdir())
    assert names == ["step0000000-epoch000.ckpt", "step0000004-epoch000.ckpt"] + [
        "step0000008-epoch001.ckpt"
    ]
    series = resolve_series(str(run_dir))  # last.ckpt and best.ckpt repeat step 8
    assert [(p["step"], p["epoch"]) for p in series] == [(0, 0), (4, 0), (8, 1)]
    assert record["global_step"] == 8 and all("/series/" in p["path"] for p in series)

    counted = []
    from stbias.lit.probe import ProbeModule

    original = ProbeModule.test_step
    monkeypatch.setattr(
        ProbeModule,
        "test_step",
        lambda self, batch, i: counted.append(len(batch["index"])) or original(self, batch, i),
    )
    out = tmp_path / "probe"
    out.mkdir()
    monkeypatch.chdir(out)
    probe_args = ["experiment=bias_over_training", f"probe.checkpoints={run_dir}"]
    probe_args += ["probe.num_clips=8", "probe.bootstrap=20", "logger=none"]
    first, _ = run_task(probe_cfg(compose, tmp_path, out, *probe_args))
    assert sum(counted) == 3 * 8  # every checkpoint's clips through the model exactly once
    assert [e["cache"]["clips_run"] for e in first["series"]] == [8, 8, 8]
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["step"], r["epoch"], r["layer"]) for r in rows][:5] == [
        ("0", "0", "stem"),
        ("0", "0", "res2"),
        ("0", "0", "res3"),
        ("0", "0", "res4"),
        ("4", "0", "stem"),
    ]
    assert len(rows) == 12 and {r["progress"] for r in rows} == {"0.0", "0.5", "1.0"}
    assert all(float(r["scores_dynamic_lo"]) <= float(r["scores_dynamic_hi"]) for r in rows)
    assert (out / "bias_over_training.png").stat().st_size > 5000
    stored = json.loads((out / "results.json").read_text())
    assert [s["layer"] for s in stored["settling"]] == ["stem", "res2", "res3", "res4"]
    # the training weights differ from step to step
    assert len({e["weights_sha256"] for e in first["series"]}) == 3

    counted.clear()
    again, _ = run_task(probe_cfg(compose, tmp_path, out, *probe_args))
    assert counted == [] and [e["cache"]["clips_run"] for e in again["series"]] == [0, 0, 0]
    assert [e["layers"] for e in again["series"]] == [e["layers"] for e in first["series"]]

    with pytest.raises(StbiasError, match="model.checkpoint"):
        run_task(
            probe_cfg(compose, tmp_path, out, *probe_args, f"model.checkpoint={series[0]['path']}")
        )


def test_a_series_every_n_steps_uses_lightnings_checkpoint_callback(tmp_path):
    initial, periodic = series_callbacks(str(tmp_path), parse_every("200 steps"))
    assert isinstance(periodic, ModelCheckpoint) and periodic.save_top_k == -1
    assert periodic._every_n_train_steps == 200 and periodic._every_n_epochs == 0
    assert periodic.dirpath == str(tmp_path / "series") and initial.dirpath == periodic.dirpath


def test_settling_fraction_is_where_the_shares_stay_within_ten_percent_of_the_end():
    def row(step, dyn, stat):
        return {
            "step": step,
            "layer": "l",
            "percent_dynamic": dyn,
            "percent_static": stat,
            "scores_dynamic": dyn / 100,
            "scores_static": stat / 100,
        }

    rows = [row(0, 10, 50), row(25, 30, 42), row(50, 18, 41), row(75, 21, 39), row(100, 20, 40)]
    (entry,) = settling(rows)
    # dynamic: 18 and 21 are within 2 of 20, 30 is not -> from step 50; static: 42 in, 50 out
    assert entry["settle_percent_dynamic"] == 0.5 and entry["settle_percent_static"] == 0.25
    assert entry["settle"] == 0.5 and entry["final_percent_dynamic"] == 20


# --- the experiment ---------------------------------------------------------------------------


@pytest.mark.slow
def test_the_static_dropout_experiment_reduced(compose, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = probe_cfg(
        compose,
        tmp_path,
        tmp_path,
        "experiment=static_dropout",
        "task.seeds=[3]",
        "dataset.num_samples=32",
        "train.val_clips=16",
        "train.batch_size=8",
        "trainer.max_epochs=1",
        "probe.num_clips=8",
        "logger=none",
    )
    rows, objects = run_task(cfg)
    assert [r["mode"] for r in rows] == ["none", "static", "all", "random"]
    assert len({r["init_checksum"] for r in rows}) == 1  # one initialisation per seed
    assert rows[0]["data_order"] and len({r["data_order"] for r in rows}) == 1  # one data order
    for r in rows:
        assert r["acc"] == pytest.approx(r["val/acc"])  # the report measures what training did
        assert 0 <= r["acc_motion_only"] <= 1 and r["units_dynamic"] >= 0
        report = json.loads((tmp_path / f"{r['mode']}-seed3" / "final_report.json").read_text())
        assert report["layer"] == "pool" and list(report["probe"]) == [
            "stem",
            "res2",
            "res3",
            "res4",
            "pool",
        ]
    static = json.loads((tmp_path / "static-seed3" / "results.json").read_text())
    refreshes = static["static_dropout"]["refreshes"]
    assert len(refreshes) == 1 and refreshes[0]["dropped_set"] == refreshes[0]["static_set"]
    assert rows[0]["refreshes"] == 0
    stored = static_dropout_rows(tmp_path / "static_dropout.csv")
    assert [r["mode"] for r in stored] == ["none", "static", "all", "random"]
    assert (tmp_path / "static_dropout.png").stat().st_size > 5000
    assert "| static | 1 |" in (tmp_path / "static_dropout.md").read_text()
    tex = (tmp_path / "static_dropout.tex").read_text()
    assert "\\toprule" in tex and "static & 1 &" in tex  # the same table in LaTeX
    record = json.loads((tmp_path / "results.json").read_text())  # the study's own record
    assert record["task"] == "static_dropout" and record["seed"] == 0
    assert [e["mode"] for e in record["summary"]] == ["none", "static", "all", "random"]
    assert record["summary"][0]["acc_lo"] is None  # one seed: no interval, null rather than NaN


def test_static_dropout_table_and_figure_draw_the_means_over_seeds():
    rows = []
    for mode, base in (("none", 0.6), ("static", 0.7)):
        for seed, delta in enumerate((-0.1, 0.0, 0.1)):
            rows.append(
                {
                    "mode": mode,
                    "seed": seed,
                    "acc": base + delta,
                    "acc_motion_only": base / 2,
                    "units_dynamic": 10 + seed,
                }
            )
    summary = summarize(rows)
    assert summary[0]["acc"] == pytest.approx(0.6) and summary[1]["acc"] == pytest.approx(0.7)
    half = 4.302652729911275 * 0.1 / np.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert summary[0]["acc_hi"] - summary[0]["acc"] == pytest.approx(half)
    assert f"0.600 ± {half:.3f}" in table(summary)
    fig = figure(rows, summary)
    heights = [p.get_height() for p in fig.axes[0].patches]
    np.testing.assert_allclose(heights, [0.6, 0.7])
    assert [a.get_title() for a in fig.axes] == ["top-1", "top-1 motion-only", "dynamic units"]


def test_dead_units_are_residual_for_every_threshold():
    rng = np.random.default_rng(0)
    z1 = rng.normal(size=(40, 3))
    z2 = z1 + 0.1 * rng.normal(size=(40, 3))
    z1[:, 0] = z2[:, 0] = 1.0
    report = score_pairs(z1, z2, ["static", "dynamic"] * 20, lam=-0.5)
    assert report["units"]["dead"] == 1 and report["units"]["residual"] == 1
    assert report["units"]["joint"] == 2
    assert not static_units(report, "static_joint", -0.5)[0]


def test_bias_over_training_figure_draws_the_rows():
    rows = []
    for layer in ("res4", "pool"):
        for step, dyn in ((0, 12.5), (10, 20.0), (20, 25.0)):
            rows.append(
                {
                    "step": str(step),
                    "layer": layer,
                    "percent_dynamic": str(dyn),
                    "percent_static": str(40 - dyn / 2),
                    "percent_residual": str(60 - dyn / 2),
                    "scores_dynamic": str(dyn / 100),
                    "scores_static": "0.5",
                    "scores_dynamic_lo": str(dyn / 100 - 0.1),
                    "scores_dynamic_hi": str(dyn / 100 + 0.1),
                }
            )
    fig = bias_over_training(rows, title="t")
    top, bottom = fig.axes[0], fig.axes[2]  # res4: split, scores
    assert top.get_title() == "res4"
    np.testing.assert_allclose(top.lines[0].get_ydata(), [12.5, 20.0, 25.0])
    np.testing.assert_allclose(top.lines[0].get_xdata(), [0, 10, 20])
    np.testing.assert_allclose(bottom.lines[0].get_ydata(), [0.125, 0.2, 0.25])
    assert len(bottom.collections) == 1  # the dynamic band; no interval for the others


# --- random streams: the estimate draws nothing the training draws -------------------------------

SAME_DATA = [
    "dataset=pfm_mixed",
    "dataset.num_samples=32",
    "dataset.seed=0",
    "train.val_clips=16",
    "train.batch_size=8",
    "trainer.max_epochs=2",
    "model.builder.dropout=0.5",  # the network's own dropout draws too
    "probe.num_clips=8",
]


def _weights_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_an_empty_dropped_set_trains_bit_for_bit_as_p_0(compose, tmp_path, monkeypatch):
    import contextlib

    from stbias.lit import static_dropout as sd

    plain, objects = train.run(train_cfg(compose, tmp_path / "plain", *SAME_DATA))
    # the static set is estimated (a full probe pass, twice) and classified empty
    monkeypatch.setattr(sd, "static_units", lambda report, units, lam: np.zeros(128, dtype=bool))
    on = [*SAME_DATA, "train.static_dropout.p=0.5"]
    empty, objects_empty = train.run(train_cfg(compose, tmp_path / "empty", *on))
    refreshes = empty["static_dropout"]["refreshes"]
    assert [r["set_size"] for r in refreshes] == [0, 0]
    assert _weights_equal(objects["model"], objects_empty["model"])
    assert empty["val/acc"] == plain["val/acc"] and empty["data_order"] == plain["data_order"]
    assert plain["data_order"] is not None
    # the check can fail: the same estimate drawing from the training's streams moves them
    monkeypatch.setattr(sd, "isolated_rng", lambda device=None: contextlib.nullcontext())
    shared, objects_shared = train.run(train_cfg(compose, tmp_path / "shared", *on))
    assert not _weights_equal(objects["model"], objects_shared["model"])


def test_every_arm_sees_the_same_data_order(compose, tmp_path):
    plain, _ = train.run(train_cfg(compose, tmp_path / "plain", *SAME_DATA))
    for mode in ("static", "all", "random"):
        arm = [*SAME_DATA, "train.static_dropout.p=0.5", f"train.static_dropout.mode={mode}"]
        record, _ = train.run(train_cfg(compose, tmp_path / mode, *arm))
        assert record["static_dropout"]["refreshes"][0]["dropped_units"] > 0
        assert record["data_order"] == plain["data_order"], mode


def test_isolated_rng_restores_every_stream_and_the_dropout_draws_privately():
    import random

    from stbias.lit.static_dropout import isolated_rng

    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    with isolated_rng("cpu"):
        torch.rand(5), np.random.rand(5), random.random()
        list(torch.utils.data.DataLoader(range(4), shuffle=True))
    after = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    want = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(after[0], want[0]) and np.array_equal(after[1], want[1])
    assert after[2] == want[2]
    # the dropout's masks come from its own generator: seeded, and the global stream stays put
    drop = ChannelDropout(6).train()
    drop.set(np.ones(6, dtype=bool), 0.5)
    drop.seed(11)
    torch.manual_seed(0)
    first = drop(torch.ones(4, 6))
    global_next = torch.rand(2)
    torch.manual_seed(0)
    assert torch.equal(global_next, torch.rand(2))
    drop.seed(11)
    assert torch.equal(drop(torch.ones(4, 6)), first)
    assert set(first.unique().tolist()) == {0.0, 2.0}
    state = drop.generator_states()
    again = drop(torch.ones(4, 6))
    drop.load_generator_states(state)
    assert torch.equal(drop(torch.ones(4, 6)), again)


def test_data_order_checksum_follows_the_order_of_the_clips():
    from stbias.lit.static_dropout import DataOrder

    def digest(batches):
        order = DataOrder()
        for i, b in enumerate(batches):
            order.on_train_batch_start(None, None, {"index": torch.tensor(b)}, i)
        return order.checksum

    assert digest([[0, 1], [2, 3]]) == digest([[0, 1], [2, 3]])
    assert digest([[0, 1], [2, 3]]) != digest([[2, 3], [0, 1]])
    order = DataOrder()
    order.on_train_batch_start(None, None, {"video": torch.zeros(1)}, 0)
    assert order.checksum is None


def test_static_dropout_on_grey_clips_probes_the_network_adapted_to_them(compose, tmp_path):
    grey = [
        "dataset=brushmnist_small",
        "train.train_clips=16",
        "train.val_clips=8",
        "train.batch_size=8",
        "trainer.max_epochs=1",
        "train.static_dropout.p=0.5",
        "probe.num_clips=8",
    ]
    record, _ = train.run(train_cfg(compose, tmp_path, *grey))
    assert record["in_channels"] == 1  # the network takes one channel, and so do the probe's views
    assert record["static_dropout"]["final"]["probe"]["pool"]["n_pairs"]["static"] == 8


@pytest.mark.gpu
def test_the_cuda_stream_is_restored_and_the_dropout_draws_privately_on_the_device():
    from stbias.lit.static_dropout import isolated_rng

    torch.cuda.manual_seed(5)
    with isolated_rng("cuda"):
        torch.rand(7, device="cuda")
    after = torch.rand(3, device="cuda")
    torch.cuda.manual_seed(5)
    assert torch.equal(after, torch.rand(3, device="cuda"))
    drop = ChannelDropout(6).cuda().train()
    drop.set(np.ones(6, dtype=bool), 0.5)
    drop.seed(11)
    torch.cuda.manual_seed(0)
    first = drop(torch.ones(4, 6, device="cuda"))
    global_next = torch.rand(2, device="cuda")
    torch.cuda.manual_seed(0)
    assert torch.equal(global_next, torch.rand(2, device="cuda"))
    drop.seed(11)
    assert torch.equal(drop(torch.ones(4, 6, device="cuda")), first)
    state = drop.generator_states()
    again = drop(torch.ones(4, 6, device="cuda"))
    drop.load_generator_states(state)
    assert torch.equal(drop(torch.ones(4, 6, device="cuda")), again)


def test_modes_are_compared_with_no_dropout_seed_by_seed():
    from scipy import stats

    from stbias.plotting.static_dropout import paired_differences, table

    # seed effects shared by both arms cancel in the paired differences
    base = {0: 0.60, 1: 0.90, 2: 0.75}
    gains = {0: 0.05, 1: 0.07, 2: 0.03}
    rows = [{"mode": "none", "seed": s, "acc": a, "units_dynamic": 2.0} for s, a in base.items()]
    rows += [
        {"mode": "static", "seed": s, "acc": base[s] + gains[s], "units_dynamic": 5.0 + s}
        for s in base
    ]
    rows.append({"mode": "random", "seed": 7, "acc": 0.1})  # no baseline for seed 7: left out
    (static,) = paired_differences(rows)
    assert static["mode"] == "static − none" and static["seeds"] == 3
    x = np.array(list(gains.values()))
    half = stats.t.ppf(0.975, 2) * x.std(ddof=1) / np.sqrt(3)
    assert static["acc"] == pytest.approx(x.mean())
    assert (static["acc_lo"], static["acc_hi"]) == pytest.approx((x.mean() - half, x.mean() + half))
    assert static["units_dynamic"] == pytest.approx(4.0)
    assert f"| static − none | 3 | {x.mean():.3f} ± {half:.3f} |" in table([static])
    assert paired_differences([r for r in rows if r["mode"] != "none"]) == []
