"""Byvshev et al.'s experiments: error breakdown, task=test (footprints, reversed frames), Table 1
and the P+F+M grid of Table 2, on reduced embedded settings."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config
from omegaconf import open_dict

from stbias.data import BrushMNIST, PlacesFacesMNIST
from stbias.errors import StbiasError
from stbias.lit.evaluate import Evaluator, reverse_frames
from stbias.metrics.breakdown import ErrorBreakdown, error_breakdown
from stbias.models.inputs import InputSpec
from stbias.studies import byvshev
from stbias.tasks import TASKS, evaluate, train  # noqa: F401 - TASKS: the test task is a task

ROOT = Path(__file__).resolve().parents[1]
BRUSH = (("shape", "motion", 10), ("brush", "appearance", 10))
QUIET = [
    "logger=none",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.num_sanity_val_steps=0",
]
# the embedded Table 1 experiment, shrunk: a few clips, one epoch
SMALL = [
    "experiment=byvshev_brushmnist_small",
    "dataset.num_samples=200",
    "train.val_clips=100",
    "probe.num_clips=100",
    "trainer.max_epochs=1",
    *QUIET,
]


def reference_breakdown(pred, label):
    """Independent transcription of SPEC §4: s = c // 10, b = c % 10, fractions of all clips."""
    counts = {"acc": 0, "acc_shape": 0, "acc_brush": 0, "app": 0, "mot": 0, "both": 0}
    for p, y in zip(pred.tolist(), label.tolist()):
        shape_ok, brush_ok = p // 10 == y // 10, p % 10 == y % 10
        counts["acc"] += p == y
        counts["acc_shape"] += shape_ok
        counts["acc_brush"] += brush_ok
        counts["app"] += shape_ok and not brush_ok
        counts["mot"] += brush_ok and not shape_ok
        counts["both"] += not shape_ok and not brush_ok
    n = len(label)
    return {k: v / n for k, v in counts.items()}


# --- the error breakdown ----------------------------------------------------------------------


def test_breakdown_sums_with_accuracy_to_one_on_random_predictions():
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 100, (997,), generator=g)
    # a mix of random guesses and right answers, so every outcome occurs
    pred = torch.where(
        torch.rand(997, generator=g) < 0.3, label, torch.randint(0, 100, (997,), generator=g)
    )
    out = error_breakdown(pred, label, BRUSH)
    total = out["acc"] + out["err_appearance_only"] + out["err_motion_only"] + out["err_both"]
    assert total == pytest.approx(1.0, abs=1e-12)
    ref = reference_breakdown(pred, label)
    assert out["acc"] == pytest.approx(ref["acc"]) and out["acc_shape"] == pytest.approx(
        ref["acc_shape"]
    )
    assert out["acc_brush"] == pytest.approx(ref["acc_brush"])
    assert out["err_appearance_only"] == pytest.approx(ref["app"])
    assert out["err_motion_only"] == pytest.approx(ref["mot"])
    assert out["err_both"] == pytest.approx(ref["both"])
    assert min(out.values()) > 0
    # the streaming metric over uneven batches, from logits, gives the same numbers
    metric = ErrorBreakdown(BRUSH)
    logits = torch.nn.functional.one_hot(pred, 100).float()
    for lo, hi in ((0, 1), (1, 400), (400, 997)):
        metric.update(logits[lo:hi], label[lo:hi])
    assert metric.compute() == pytest.approx(out)


def test_breakdown_known_answer_and_appearance_first_labels():
    # BrushMNIST class 23: shape 2, brush 3
    label = torch.tensor([23, 23, 23, 23])
    pred = torch.tensor([23, 24, 33, 34])  # right, brush wrong, shape wrong, both wrong
    out = error_breakdown(pred, label, BRUSH)
    assert out == {
        "acc": 0.25,
        "acc_shape": 0.5,
        "acc_brush": 0.5,
        "err_appearance_only": 0.25,
        "err_motion_only": 0.25,
        "err_both": 0.25,
    }
    # P+F+M_3_5: label = place * 5 + motion, the appearance factor first
    pfm = (("place", "appearance", 3), ("motion", "motion", 5))
    label = torch.tensor([7, 7, 7])  # place 1, motion 2
    out = error_breakdown(torch.tensor([8, 12, 7]), label, pfm)
    assert out["err_motion_only"] == pytest.approx(1 / 3)  # 8: place 1, motion 3
    assert out["err_appearance_only"] == pytest.approx(1 / 3)  # 12: place 2, motion 2
    assert out["acc_place"] == out["acc_motion"] == pytest.approx(2 / 3)


def test_breakdown_refuses_bad_input():
    with pytest.raises(StbiasError, match="one motion and one appearance"):
        error_breakdown(
            torch.tensor([0]), torch.tensor([0]), (("a", "motion", 2), ("b", "motion", 2))
        )
    with pytest.raises(StbiasError, match=r"labels must lie in \[0, 100\)"):
        error_breakdown(torch.tensor([0]), torch.tensor([100]), BRUSH)
    with pytest.raises(StbiasError, match="no clips"):
        ErrorBreakdown(BRUSH).compute()


def test_dataset_label_factors_decode_their_samples():
    bm = BrushMNIST(num_frames=4, size=32, num_samples=100)
    pfm = PlacesFacesMNIST(num_places=3, num_motions=5, num_frames=4, size=32, num_samples=15)
    for dataset, keys in (
        (bm, ("shape_label", "brush_label")),
        (pfm, ("place_label", "motion_label")),
    ):
        for i in (0, 7, len(dataset) - 1):
            sample = dataset[i]
            parts = byvshev_split(sample["label"], dataset.label_factors)
            assert parts == [sample[k] for k in keys]
    assert [f[1] for f in bm.label_factors] == ["motion", "appearance"]
    assert [f[1] for f in pfm.label_factors] == ["appearance", "motion"]


def byvshev_split(label, factors):
    from stbias.metrics.breakdown import label_factors, split_label

    parts = split_label(torch.tensor([label]), label_factors(factors))
    return [int(v) for v in parts.values()]


# --- evaluation: reversed frames --------------------------------------------------------------


class FirstFrame(torch.nn.Module):
    """Predicts the index of the first frame it sees (frame t of a numbered clip has value t)."""

    def __init__(self, frames):
        super().__init__()
        self.frames = frames

    def forward(self, x):
        first = x[:, 0, 0, 0, 0].round().long().clamp(0, self.frames - 1)
        return torch.nn.functional.one_hot(first, self.frames).float()


def test_reverse_frames_flips_every_pathway():
    x = torch.arange(6.0).view(1, 1, 6, 1, 1).expand(2, 3, 6, 2, 2)
    assert reverse_frames(x)[1, 2, :, 0, 0].tolist() == [5, 4, 3, 2, 1, 0]
    slow, fast = reverse_frames([x[:, :, ::3], x])
    assert slow[0, 0, :, 0, 0].tolist() == [3, 0] and fast[0, 0, :, 0, 0].tolist()[0] == 5


def test_evaluator_known_answer_with_reversed_frames():
    import pytorch_lightning as pl

    from stbias.lit.probe import EvalData

    frames = 6

    class Numbered(torch.utils.data.Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            video = (
                torch.arange(frames, dtype=torch.uint8)
                .view(frames, 1, 1, 1)
                .expand(frames, 4, 4, 3)
            )
            return {"video": video.clone(), "label": 0, "index": i, "id": f"clip{i}"}

    spec = InputSpec(frames=frames, size=4, mean=(0.0,) * 3, std=(1 / 255,) * 3)
    for reverse, acc, pred in ((False, 1.0, 0), (True, 0.0, frames - 1)):
        module = Evaluator(FirstFrame(frames), spec, frames, reverse=reverse)
        trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
        trainer.test(module, datamodule=EvalData(Numbered(), 2), verbose=False)
        assert module.results["test/acc"] == acc and module.clips == 5
        assert [r["pred"] for r in module.predictions] == [pred] * 5
        assert [r["index"] for r in module.predictions] == list(range(5))


# --- task=test on trained checkpoints; Table 1 ---------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny BrushMNIST classifier trained by task=train on the shipped experiment config."""
    folder = tmp_path_factory.mktemp("train")
    cfg = compose_config("task=train", *SMALL)
    with open_dict(cfg):
        cfg.train.output_dir = str(folder)
    record, _ = train.run(cfg)
    return record


def run_test(compose, tmp_path, *overrides):
    cfg = compose("task=test", *SMALL, *overrides)
    with open_dict(cfg):
        cfg.task.output_dir = str(tmp_path)
    record, objects = evaluate.run(cfg)
    return record, objects


def test_task_test_writes_the_breakdown_and_predictions(compose, tmp_path, trained):
    assert TASKS["test"] == "stbias.tasks.evaluate:run"
    record, _ = run_test(compose, tmp_path, f"model.checkpoint={trained['checkpoint']}")
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["num_clips"] == 100 and saved["num_classes"] == 100
    assert saved["split"] == "val" and saved["variant"] == "normal" and not saved["reverse"]
    keys = ("test/acc", "test/err_appearance_only", "test/err_motion_only", "test/err_both")
    assert sum(saved[k] for k in keys) == pytest.approx(1.0, abs=1e-12)
    assert {"test/acc_shape", "test/acc_brush", "test/acc5", "test/loss"} <= set(saved)
    assert saved["trained_on"]["variant"] == "normal"
    assert saved["trained_on"]["val/acc"] == pytest.approx(trained["val/acc"])
    with open(tmp_path / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 100
    preds = torch.tensor([int(r["pred"]) for r in rows])
    labels = torch.tensor([int(r["label"]) for r in rows])
    assert all(int(r["label"]) == int(r["label_shape"]) * 10 + int(r["label_brush"]) for r in rows)
    # the recorded metrics are those of the recorded predictions
    ref = reference_breakdown(preds, labels)
    assert saved["test/acc_shape"] == pytest.approx(ref["acc_shape"])
    assert saved["test/err_both"] == pytest.approx(ref["both"])
    # the validation accuracy of training is the accuracy on the same (val = test) clips
    assert saved["test/acc"] == pytest.approx(trained["val/acc"], abs=1e-6)


def test_reversed_frames_equal_the_reversed_dataset(compose, tmp_path, trained):
    """task.reverse=true (any dataset) and BrushMNIST's reversed variant predict the same."""
    ckpt = f"model.checkpoint={trained['checkpoint']}"
    a, _ = run_test(compose, tmp_path / "a", ckpt, "task.reverse=true")
    b, _ = run_test(compose, tmp_path / "b", ckpt, "dataset.variant=reversed")
    read = lambda p: [r["pred"] for r in csv.DictReader(open(p / "predictions.csv"))]  # noqa: E731
    assert read(tmp_path / "a") == read(tmp_path / "b")
    assert a["test/acc"] == b["test/acc"] and a["reverse"] and not b["reverse"]


def test_task_test_refuses_a_model_of_another_dataset(compose, tmp_path, trained):
    with pytest.raises(StbiasError, match="100 outputs but the dataset has 16 classes"):
        run_test(
            compose,
            tmp_path,
            f"model.checkpoint={trained['checkpoint']}",
            "dataset=pfm",
            "dataset.num_places=4",
            "dataset.num_motions=4",
        )


@pytest.mark.slow
def test_table1_trains_both_variants_and_tabulates_four_evaluations(tmp_path):
    rows = byvshev.table1(tmp_path, SMALL[1:])
    settings = {(r["trained_variant"], r["variant"], r["reverse"]) for r in rows}
    assert settings == set(byvshev.TABLE1_EVALUATIONS)
    for row in rows:
        total = row["acc"] + row["err_appearance_only"] + row["err_motion_only"] + row["err_both"]
        assert total == pytest.approx(1.0, abs=1e-12)
    footprint = json.loads((tmp_path / "train-footprint/results.json").read_text())
    assert footprint["config"]["dataset"]["variant"] == "footprint"
    with open(tmp_path / "table1.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 4
    text = (tmp_path / "table1.md").read_text()
    assert "trained and tested on footprints" in text and "11.3 acc" in text
    assert (tmp_path / "table1.png").stat().st_size > 0
    # a second call reuses both trainings
    again = byvshev.table1(tmp_path, SMALL[1:])
    assert [r["acc"] for r in again] == [r["acc"] for r in rows]


# --- plots ------------------------------------------------------------------------------------


def test_table1_figure_has_the_papers_three_panels():
    from stbias.plotting.byvshev import table1_figure

    rows = []
    for trained_on, variant, reverse in byvshev.TABLE1_EVALUATIONS:
        rows.append(
            dict(
                trained_variant=trained_on,
                variant=variant,
                reverse=reverse,
                acc=0.9,
                acc_shape=0.95,
                acc_brush=0.93,
                err_appearance_only=0.05,
                err_motion_only=0.03,
                err_both=0.02,
            )
        )
    fig = table1_figure(rows, "t")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["(a) errors, normal clips", "(b) errors, footprints", "(c) frame order"]
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["appearance (brush)\nonly", "motion (shape)\nonly", "both"]
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert legend == ["stbias", "paper", "stbias, trained on normal"]


def test_table2_heat_map_rows_are_places_and_columns_motions():
    from stbias.plotting.byvshev import table2_figure, table2_grid, table2_markdown

    rows = [
        {"places": p, "motions": m, "seed": s, "acc": 1.0 / p + 0.01 * m + 0.001 * s}
        for p in (2, 4)
        for m in (2, 8, 16)
        for s in (0, 1)
    ]
    places, motions, grid = table2_grid(rows)
    assert places == [2, 4] and motions == [2, 8, 16]
    assert grid[1, 2] == pytest.approx(0.25 + 0.16 + 0.0005)  # mean over the two seeds
    fig = table2_figure(rows)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "motion classes (M)" and ax.get_ylabel() == "place classes (A)"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["2", "4"]
    assert fig.axes[1].get_title() == "paper (I3D)"
    assert "| 4 | 0.27 (0.96) | 0.33 (0.97) | 0.41 (0.97) |" in table2_markdown(rows)


def test_table2_cells_give_the_mean_and_t_interval_over_seeds_and_chance():
    from scipy import stats

    from stbias.plotting.byvshev import table2_cells, table2_interval_markdown

    accs = {0: 0.90, 1: 0.80, 2: 0.95}
    rows = [{"places": 8, "motions": 2, "seed": s, "acc": a} for s, a in accs.items()]
    rows.append({"places": 2, "motions": 2, "seed": 0, "acc": 1.0})
    one, many = table2_cells(rows)
    assert (one["places"], one["seeds"]) == (2, 1) and np.isnan(one["acc_lo"])
    x = np.array(list(accs.values()))
    half = stats.t.ppf(0.975, 2) * x.std(ddof=1) / np.sqrt(3)
    assert many["acc"] == pytest.approx(x.mean())
    assert (many["acc_lo"], many["acc_hi"]) == pytest.approx((x.mean() - half, x.mean() + half))
    assert many["chance"] == pytest.approx(1 / 16)
    text = table2_interval_markdown(rows)
    assert f"| 8 | {x.mean():.2f} ± {half:.2f} (chance 0.062, paper 0.89) |" in text


def test_table2_trend_recovers_the_slopes_of_a_known_plane_per_seed():
    from stbias.plotting.byvshev import PAPER_TABLE2, PAPER_TABLE2_CLASSES, table2_trend

    # acc = 1 - b log2(places) - c log2(motions) + seed offset: every seed's fit is exact
    slopes = {0: (-0.10, -0.01), 1: (-0.12, -0.03), 2: (-0.08, 0.02)}
    rows = [
        {"places": p, "motions": m, "seed": s, "acc": 0.9 + b * np.log2(p) + c * np.log2(m) + s}
        for s, (b, c) in slopes.items()
        for p in (2, 4, 8)
        for m in (2, 8)
    ]
    trend = table2_trend(rows)
    assert trend["seeds"] == 3
    assert trend["places"] == pytest.approx(-0.10) and trend["motions"] == pytest.approx(-0.02 / 3)
    gaps = [b - c for b, c in slopes.values()]
    assert trend["gap"] == pytest.approx(np.mean(gaps))
    assert trend["gap_lo"] < np.mean(gaps) < trend["gap_hi"]
    # the paper's own grid shows its trend: place classes cost more than motion classes
    assert trend["paper_gap"] < -0.05
    i = [PAPER_TABLE2_CLASSES.index(v) for v in (2, 8)]
    assert trend["paper_motions"] == pytest.approx(
        np.mean([(PAPER_TABLE2[j, i[1]] - PAPER_TABLE2[j, i[0]]) / 2 for j in range(3)]), abs=1e-9
    )
    # one value on an axis: no trend, never a made-up one
    flat = table2_trend([r for r in rows if r["motions"] == 2])
    assert np.isnan(flat["motions"]) and np.isnan(flat["places"])


# --- Table 2: the multirun -------------------------------------------------------------------


def run_cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


def test_grid_beyond_the_embedded_photographs_stops_before_training(tmp_path):
    out = run_cli(
        "-m",
        "experiment=byvshev_table2_small",
        "dataset.num_places=2,20",
        f"hydra.sweep.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert out.returncode == 2
    assert "num_places 20 exceeds the 18 embedded place classes" in out.stderr
    assert "dataset.places_root=" in out.stderr
    assert not list(tmp_path.glob("places*"))  # nothing trained


def test_grid_values_come_from_the_config_and_the_command_line(compose):
    cfg = compose("experiment=byvshev_table2", hydra=True)
    with open_dict(cfg):  # the command line of `python run.py -m ...`
        cfg.hydra.overrides.task = ["experiment=byvshev_table2", "dataset.num_motions=2,4"]
    assert byvshev._sweep_values(cfg, "dataset.num_places") == [2, 4, 8, 16, 32, 64, 128, 256]
    assert byvshev._sweep_values(cfg, "dataset.num_motions") == [2, 4]
    with pytest.raises(StbiasError, match="dataset.places_root"):
        byvshev.check_pfm_grid(cfg)


@pytest.mark.slow
def test_table2_multirun_writes_one_row_per_cell_and_the_heat_map(tmp_path):
    out = run_cli(
        "-m",
        "experiment=byvshev_table2_small",
        "dataset.num_places=2,4",
        "dataset.num_motions=2",
        "model.input.frames=4",
        "dataset.num_samples=32",
        "train.val_clips=16",
        "trainer.max_epochs=1",
        "logger=none",
        f"hydra.sweep.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    with open(tmp_path / "table2.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["places"], r["motions"], r["seed"]) for r in rows] == [
        ("2", "2", "0"),
        ("4", "2", "0"),
    ]
    for row in rows:
        record = json.loads((Path(row["run_dir"]) / "results.json").read_text())
        assert (
            float(row["acc"]) == record["val/acc"]
            and record["num_classes"] == int(row["places"]) * 2
        )
    assert (tmp_path / "table2.png").stat().st_size > 0
    assert "| places \\ motions | 2 |" in (tmp_path / "table2.md").read_text()


def test_unreadable_results_are_skipped_and_counted(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a/results.json").write_text('{"task": "train"}')
    (tmp_path / "b").mkdir()
    (tmp_path / "b/results.json").write_text("{not json")
    records, skipped = byvshev.load_records(str(tmp_path / "*"))
    assert len(records) == 1 and skipped == 1 and records[0]["run_dir"] == str(tmp_path / "a")
    assert byvshev.table2_rows(records) == [] and np.isfinite(skipped)
