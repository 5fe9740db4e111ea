"""Training: the classifier module, frame shuffling, checkpoints, resume, loggers, the task."""

from __future__ import annotations

import csv
import functools
import glob
import inspect
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf, open_dict
from torch.utils.data import Dataset

from stbias.errors import StbiasError
from stbias.lit.classifier import VideoClassifier, shuffle_clips
from stbias.lit.train_data import ClassificationData
from stbias.models.inputs import InputSpec, pack_inputs
from stbias.studies import base, shuffled_baseline
from stbias.tasks import loggers, model_setup, train
from stbias.tasks.loggers import build_logger
from stbias.tasks.model_setup import build_model
from stbias.tasks.trainer_setup import build_trainer

CONF = str(Path(__file__).resolve().parents[1] / "conf")


class MovingSquare(Dataset):
    """A bright square crossing the frame left to right (label 0) or right to left (label 1).

    Both directions visit the same positions, so a clip's frames in random order carry no
    information about its label: a frame-order-blind network stays at chance (a known answer).
    """

    def __init__(self, split="train", num_frames=8, size=32, num_samples=64, channels=3, seed=0):
        self.split, self.num_frames, self.size = split, num_frames, size
        self.num_samples, self.channels, self.seed = num_samples, channels, seed
        self.num_classes = 2

    def __len__(self):
        return self.num_samples

    def __getitem__(self, index):
        rng = np.random.default_rng([self.seed, self.split == "train", index])
        label = index % 2
        side = self.size // 4
        xs = np.linspace(0, self.size - side, self.num_frames).round().astype(int)
        if label == 1:
            xs = xs[::-1]
        y = int(rng.integers(0, self.size - side))
        video = torch.zeros(self.num_frames, self.size, self.size, self.channels, dtype=torch.uint8)
        for t, x in enumerate(xs):
            video[t, y : y + side, x : x + side] = 255
        return {"video": video, "label": label, "id": f"square_{index}", "index": index}


SQUARE = {
    "_target_": "test_train.MovingSquare",
    "split": "train",
    "num_frames": 8,
    "size": 32,
    "num_samples": 64,
    "channels": 3,
    "seed": 0,
}
TINY = [
    "model.input.frames=8",
    "model.input.size=32",
    "train.batch_size=16",
    "trainer.max_epochs=1",
    "logger=none",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.num_sanity_val_steps=0",
    "trainer.log_every_n_steps=1",
]


def make_cfg(compose, tmp_path, *overrides, dataset=None):
    """The composed root config for task=train, shrunk, writing into tmp_path."""
    cfg = compose("task=train", *TINY, *overrides)
    with open_dict(cfg):
        cfg.train.output_dir = str(tmp_path)
        if dataset is not None:
            cfg.dataset = OmegaConf.create(dataset)
    return cfg


def ids_of(frames):
    """Per clip and frame, the frame id encoded in pixel (0, 0) of channel 0: ``(B, T)``."""
    return frames[:, 0, :, 0, 0].round().long()


def numbered(batch, frames, size=8, channels=3):
    """uint8 clips whose frame t is filled with the value 10 * t (so frames can be told apart)."""
    values = (10 * torch.arange(frames, dtype=torch.uint8)).view(1, frames, 1, 1, 1)
    return values.expand(batch, frames, size, size, channels).clone()


# --- the module: inputs and frame shuffling ---------------------------------------------------


def test_model_inputs_pack_and_normalise():
    spec = InputSpec(frames=4, size=8, mean=(0.5,) * 3, std=(0.25,) * 3)
    module = VideoClassifier(torch.nn.Identity(), spec, 3, torch.optim.SGD)
    video = numbered(2, 4)
    x = module.model_inputs({"video": video, "index": torch.tensor([0, 1])})
    expected = (video.permute(0, 4, 1, 2, 3).float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(x, expected)


@pytest.mark.parametrize("pathways", [1, 2])
def test_shuffle_clips_permutes_every_pathway(pathways):
    spec = InputSpec(
        frames=8,
        size=8,
        mean=(0.0,) * 3,
        std=(1 / 255,) * 3,
        pathways=pathways,
        alpha=4 if pathways == 2 else None,
    )
    x = pack_inputs(numbered(6, 8).permute(0, 4, 1, 2, 3).float() / 255, spec)
    shuffled, perms = shuffle_clips(x, range(6), seed=3)
    before = [x] if pathways == 1 else x
    after = [shuffled] if pathways == 1 else shuffled
    assert len(after) == len(perms) == pathways
    for p, q, perm in zip(before, after, perms):
        ids_p, ids_q = ids_of(p), ids_of(q)
        assert perm.shape == ids_p.shape
        for b in range(6):
            assert sorted(ids_q[b].tolist()) == sorted(ids_p[b].tolist())  # the same frames
            assert torch.equal(ids_q[b], ids_p[b][perm[b]])
    fast = ids_of(after[-1])
    assert not any(torch.equal(row, torch.arange(8) * 10) for row in fast)  # in another order
    if pathways == 2:
        # the slow pathway's own frames (0 and 70) are re-ordered, never re-sampled; uniform
        # permutations keep some clips in order and swap others, so order says nothing
        slow = [tuple(row.tolist()) for row in ids_of(after[0])]
        assert set(slow) == {(0, 70), (70, 0)}
    first = lambda v: v if pathways == 1 else v[1]  # noqa: E731
    assert torch.equal(first(shuffle_clips(x, range(6), seed=3)[0]), first(shuffled))
    assert not torch.equal(first(shuffle_clips(x, range(6), seed=4)[0]), first(shuffled))
    # a clip's permutation depends on its index, not on its batch
    alone, _ = shuffle_clips([p[2:3] for p in before] if pathways == 2 else x[2:3], [2], seed=3)
    torch.testing.assert_close(first(alone)[0], first(shuffled)[2])


class Recorder(torch.nn.Module):
    """A tiny classifier that remembers the frame ids of every input it sees, per stage."""

    def __init__(self, num_classes=2):
        super().__init__()
        self.proj = torch.nn.Linear(3, num_classes)
        self.seen = {"train": [], "val": []}

    def forward(self, x):
        self.seen["train" if self.training else "val"].append(ids_of(x * 1.0).clone())
        return self.proj(x.mean(dim=(2, 3, 4)))


class Numbered(Dataset):
    """Clips whose frame t has the value 10 * t."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"video": numbered(1, 8)[0], "label": i % 2, "index": i}


def fit_recorder(shuffle, epochs=2):
    spec = InputSpec(frames=8, size=8, mean=(0.0,) * 3, std=(1 / 255,) * 3)
    model = Recorder()
    module = VideoClassifier(
        model, spec, 2, functools.partial(torch.optim.SGD, lr=0.0), shuffle_frames=shuffle
    )
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
    )
    trainer.fit(module, datamodule=ClassificationData(Numbered(8), Numbered(6), batch_size=4))
    return model.seen


def test_shuffle_frames_permutes_training_and_validation_clips():
    identity = torch.arange(8) * 10
    seen = fit_recorder(shuffle=True)
    train_ids = torch.cat(seen["train"])
    val_ids = torch.cat(seen["val"])
    assert train_ids.shape == (16, 8) and val_ids.shape == (12, 8)  # 2 epochs of 8 and 6 clips
    for ids in (train_ids, val_ids):
        assert all(sorted(row.tolist()) == identity.tolist() for row in ids)
        assert not any(torch.equal(row, identity) for row in ids)
    # validation clips get the same permutation every epoch, training clips new ones
    assert torch.equal(val_ids[:6], val_ids[6:])
    assert not torch.equal(train_ids[:8], train_ids[8:])
    plain = fit_recorder(shuffle=False, epochs=1)
    assert all(torch.equal(row, identity) for row in torch.cat(plain["train"] + plain["val"]))


def test_labels_out_of_range_and_missing_keys_are_reported():
    spec = InputSpec(frames=8, size=8)
    module = VideoClassifier(Recorder(), spec, 2, torch.optim.SGD)
    with pytest.raises(StbiasError, match="labels must lie in"):
        module._labels({"label": torch.tensor([0, 2])})
    module = VideoClassifier(Recorder(), spec, 2, torch.optim.SGD, label_key="shape_label")
    with pytest.raises(StbiasError, match="shape_label"):
        module._labels({"label": torch.tensor([0, 1])})
    with pytest.raises(StbiasError, match="num_classes >= 2"):
        VideoClassifier(Recorder(), spec, 1, torch.optim.SGD)


# --- the task: training runs, checkpoints, resume -----------------------------------------------


@pytest.mark.parametrize("model", ["i3d_tiny", "c2d_tiny", "slowfast_tiny"])
def test_training_run_writes_results_and_checkpoints(compose, tmp_path, model):
    cfg = make_cfg(
        compose,
        tmp_path,
        f"model={model}",
        "logger=csv",
        "trainer.max_epochs=2",
        "train.optimizer.lr=0.01",
        dataset=SQUARE,
    )
    record, objects = train.run(cfg)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["checkpoint"] == record["checkpoint"] == str(tmp_path / "checkpoints/last.ckpt")
    assert os.path.isfile(saved["checkpoint"]) and os.path.isfile(saved["best_checkpoint"])
    assert saved["global_step"] == 8 and saved["epochs"] == 2  # 64 clips / 16 per batch, twice
    assert saved["num_classes"] == 2 and saved["model_overrides"]["builder"]["num_classes"] == 2
    for key in ("val/acc", "val/acc5", "val/loss", "train/loss"):
        assert np.isfinite(saved[key]), key
    assert saved["val/acc5"] == 1.0  # top-5 of two classes
    metrics = glob.glob(str(tmp_path / "csv/*/metrics.csv"))
    with open(metrics[0]) as fh:
        columns = next(csv.reader(fh))
    assert {"train/loss", "val/acc", "val/acc5"} <= set(columns)
    head = objects["model"].head.proj
    assert head.out_features == 2


def test_trained_checkpoint_loads_by_model_checkpoint(compose, tmp_path):
    dataset = dict(SQUARE, channels=1, num_samples=32)
    cfg = make_cfg(compose, tmp_path, "model=i3d_tiny", dataset=dataset)
    record, objects = train.run(cfg)
    assert record["in_channels"] == 1
    ckpt = record["checkpoint"]
    state = torch.load(ckpt, map_location="cpu", weights_only=True)  # plain values only
    assert any(k.startswith("model.") for k in state["state_dict"])
    probe_cfg = compose("model=i3d_tiny", f"model.checkpoint={ckpt}")
    model = build_model(probe_cfg.model).eval()
    trained = objects["model"].eval()
    assert model.stem[0][0].in_channels == 1 and model.head.proj.out_features == 2
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, msg=key)
    adapted = model_setup.model_config_for_checkpoint(probe_cfg.model)
    assert adapted.input.channels == 1 and list(adapted.input.mean) == [0.45]
    x = torch.randn(2, 1, 8, 32, 32)
    torch.testing.assert_close(model(x), trained(x))


def test_resume_continues_the_step_count(compose, tmp_path):
    first = make_cfg(
        compose, tmp_path / "a", "model=c2d_tiny", "trainer.max_epochs=1", dataset=SQUARE
    )
    record1, _ = train.run(first)
    assert record1["global_step"] == 4
    resumed = make_cfg(
        compose,
        tmp_path / "b",
        "model=c2d_tiny",
        "trainer.max_epochs=2",
        f"train.resume={record1['checkpoint']}",
        dataset=SQUARE,
    )
    record2, objects = train.run(resumed)
    assert record2["global_step"] == 8 and record2["epochs"] == 2
    state = torch.load(record2["checkpoint"], map_location="cpu", weights_only=True)
    assert state["global_step"] == 8 and state["epoch"] == 1
    # the optimizer continued too: AdamW's step counters hold both epochs' steps
    steps = {float(s["step"]) for s in state["optimizer_states"][0]["state"].values()}
    assert steps == {8.0}


@pytest.mark.slow
def test_shuffled_frames_remove_direction_information(compose, tmp_path):
    """Known answer: direction of motion is learnable in order and at chance when shuffled."""
    common_args = [
        "model=i3d_tiny",
        "trainer.max_epochs=6",
        "train.optimizer.lr=0.003",
        "train.batch_size=8",
    ]
    data = dict(SQUARE, num_samples=96)
    std, _ = train.run(make_cfg(compose, tmp_path / "std", *common_args, dataset=data))
    shuf, _ = train.run(
        make_cfg(
            compose, tmp_path / "shuf", *common_args, "train.shuffle_frames=true", dataset=data
        )
    )
    assert std["init_checksum"] == shuf["init_checksum"]  # same seed, same initialisation
    assert std["val/acc"] >= 0.9
    assert shuf["val/acc"] <= 0.7
    # SlowFast: both pathways shuffled, each by its own permutations
    fast_args = ["model=slowfast_tiny", *common_args[1:], "train.shuffle_frames=true"]
    slowfast, _ = train.run(make_cfg(compose, tmp_path / "sf", *fast_args, dataset=data))
    assert slowfast["val/acc"] <= 0.7
    # C2D never mixes frames before its global pooling: blind to order even when trained in order
    c2d, _ = train.run(
        make_cfg(compose, tmp_path / "c2d", "model=c2d_tiny", *common_args[1:], dataset=data)
    )
    assert c2d["val/acc"] <= 0.7


def test_same_initialisation_through_initial_weights(compose, tmp_path):
    cfg = make_cfg(compose, tmp_path, "model=c2d_tiny", dataset=SQUARE)
    checksum = shuffled_baseline.initial_weights(cfg, tmp_path / "init.pt")
    model = build_model(
        OmegaConf.merge(
            cfg.model, {"builder": {"num_classes": 2}, "checkpoint": str(tmp_path / "init.pt")}
        )
    )
    assert train.weights_checksum(model) == checksum
    cfg2 = make_cfg(compose, tmp_path, "model=c2d_tiny", "seed=1", dataset=SQUARE)
    assert shuffled_baseline.initial_weights(cfg2, tmp_path / "other.pt") != checksum


def test_dataset_and_model_adaptation(compose):
    cfg = compose("task=train", "model=i3d_tiny")
    adapted, changes = train.adapt_model_config(cfg.model, 7, 1)
    assert changes == {
        "builder": {"num_classes": 7, "in_channels": 1},
        "input": {"channels": 1, "mean": [0.45], "std": [0.225]},
    }
    assert adapted.builder.num_classes == 7 and cfg.model.builder.num_classes == 10
    with pytest.raises(StbiasError, match="train.num_classes"):
        train.infer_num_classes(MovingSquare(), "shape_label")
    assert train.infer_num_classes(MovingSquare()) == 2
    assert train.infer_channels(MovingSquare(channels=1)) == 1


# --- configs and loggers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    sorted(p.stem for p in Path(CONF, "trainer").glob("*.yaml")),
    ids=lambda n: f"trainer_{n}",  # a bare "gpu" id would mark the test as needing a GPU
)
def test_trainer_configs_are_trainer_arguments(compose, name):
    cfg = compose("task=train", f"trainer={name}")
    args = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert args.pop("_target_") == "pytorch_lightning.Trainer"
    valid = set(inspect.signature(pl.Trainer.__init__).parameters)
    assert set(args) <= valid, set(args) - valid
    if args["accelerator"] == "cpu" and args["devices"] == 1:
        assert build_trainer(cfg.trainer).max_epochs == args["max_epochs"]


@pytest.mark.parametrize("name", ["csv", "none", "wandb"])
def test_logger_configs(compose, tmp_path, name, monkeypatch):
    cfg = compose("task=train", f"logger={name}")
    if name == "wandb":
        # starting W&B takes seconds; what matters here is the config and the fallback below
        assert cfg.logger.offline is True and cfg.logger._target_.endswith("WandbLogger")
        return
    logger = build_logger(cfg.logger, str(tmp_path))
    if name == "none":
        assert logger is False
    else:
        assert isinstance(logger, pl.loggers.CSVLogger) and logger.save_dir == str(tmp_path)


def test_wandb_that_cannot_start_falls_back_without_failing(compose, tmp_path, monkeypatch):
    cfg = compose("task=train", "logger=wandb", "logger.offline=false")
    tried = []

    def failing(node, *args, **kwargs):
        tried.append(bool(node.offline))
        raise ConnectionError("api.wandb.ai unreachable")

    monkeypatch.setattr(loggers, "server_reachable", lambda url, timeout=3.0: True)
    monkeypatch.setattr(loggers, "instantiate", failing)
    logger = build_logger(cfg.logger, str(tmp_path))
    assert tried == [False, True]  # online, then offline, then CSV
    assert isinstance(logger, pl.loggers.CSVLogger)


def test_an_unreachable_wandb_server_costs_seconds_then_logs_offline(
    compose, tmp_path, monkeypatch, caplog
):
    import socket
    import time

    with socket.socket() as s:  # a local port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    cfg = compose("task=train", "logger=wandb", "logger.offline=false")
    start = time.monotonic()
    logger = build_logger(cfg.logger, str(tmp_path), name="train-x-y")
    assert time.monotonic() - start < 15  # W&B's own retries took about 45 s
    assert type(logger).__name__ == "WandbLogger" and logger._offline
    assert [r.getMessage() for r in caplog.records if "cannot be reached" in r.getMessage()]
    loggers.finish_logger(logger)


def test_train_task_is_registered(compose):
    from stbias.tasks import TASKS

    assert TASKS["train"] == "stbias.tasks.train:run"
    cfg = compose("task=train", "train.shuffle_frames=true")
    assert cfg.task.name == "train" and cfg.train.shuffle_frames is True
    assert (
        cfg.train.optimizer._partial_ is True
        and cfg.train.scheduler.T_max == cfg.trainer.max_epochs
    )


@pytest.mark.slow
def test_shuffled_baseline_on_brushmnist_shapes(tmp_path):
    """A reduced Fig. 5 run: the motion (shape) label suffers from shuffled-frame training."""
    overrides = [
        "experiment=shuffled_brushmnist",
        "dataset.num_samples=300",
        "train.val_clips=100",
        "trainer.max_epochs=3",
        *TINY[5:],
    ]
    rows = shuffled_baseline.shuffled_baseline(
        ["i3d_tiny"], ["brushmnist_small"], tmp_path, overrides
    )
    (row,) = rows
    assert row["num_classes"] == 10 and row["label_key"] == "shape_label"
    assert row["acc_std"] >= 0.8  # chance: 0.1
    assert row["drop"] == pytest.approx((row["acc_std"] - row["acc_shuf"]) / row["acc_std"])
    assert row["drop"] >= 0.15
    with open(tmp_path / "shuffled_baseline.csv") as fh:
        saved = list(csv.DictReader(fh))
    assert float(saved[0]["drop"]) == pytest.approx(row["drop"])
    assert (tmp_path / "shuffled_baseline.png").stat().st_size > 0
    std = json.loads((tmp_path / "i3d_tiny-brushmnist_small/std/results.json").read_text())
    shuf = json.loads((tmp_path / "i3d_tiny-brushmnist_small/shuf/results.json").read_text())
    assert std["init_checksum"] == shuf["init_checksum"] == row["init_checksum"]
    assert (std["shuffle_frames"], shuf["shuffle_frames"]) == (False, True)


def test_quickstart_checkpoint_is_trained_once_and_cached(compose, tmp_path):
    from stbias.studies import quickstart

    small = [
        f"task.cache_dir={tmp_path}",
        "task.train.clips=32",
        "task.train.val_clips=16",
        "task.train.max_epochs=1",
        "trainer.enable_progress_bar=false",
    ]
    cfg = compose(*small)
    seeded = compose(*small, "seed=1")
    assert cfg.task.name == "quickstart"  # model=quickstart, the default, selects it
    c2d = quickstart.quickstart_models(cfg)[0]
    assert c2d.name == "c2d_tiny" and c2d.input.size == cfg.model.input.size == 32
    first = quickstart.ensure_trained(cfg, c2d)
    ckpt = first["checkpoint"]
    assert ckpt.startswith(str(tmp_path / "c2d_tiny-")) and os.path.isfile(ckpt)
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert saved["input"]["size"] == 32 and saved["input"]["frames"] == 8
    stamp = os.path.getmtime(ckpt)
    again = quickstart.ensure_trained(cfg, c2d)
    assert again["checkpoint"] == ckpt and os.path.getmtime(ckpt) == stamp  # not retrained
    other = quickstart.ensure_trained(seeded, quickstart.quickstart_models(seeded)[0])
    assert other["checkpoint"] != ckpt  # another setting, another checkpoint


def test_lightning_keys_mean_what_they_mean_in_the_quickstart(compose, tmp_path):
    """trainer.max_epochs=1 trains the quickstart's models one epoch; other Trainer keys pass."""
    from stbias.studies import quickstart

    def trainer_of(*overrides):
        cfg = compose(f"task.cache_dir={tmp_path}", *overrides)
        node = quickstart.quickstart_models(cfg)[1]
        train_cfg = quickstart.train_config(cfg, node)
        return train_cfg.trainer, base.cache_folder(cfg, node.name, train_cfg)

    default, default_folder = trainer_of()
    assert default.max_epochs == 6  # task.train.max_epochs where trainer.max_epochs is not set
    one, one_folder = trainer_of("trainer.max_epochs=1")
    assert one.max_epochs == 1 and one_folder != default_folder
    limited, _ = trainer_of("trainer.limit_train_batches=3", "task.train.max_epochs=2")
    assert limited.limit_train_batches == 3 and limited.max_epochs == 2
    quiet, quiet_folder = trainer_of("trainer.enable_progress_bar=false")
    assert quiet_folder == default_folder  # what the terminal shows trains nothing new


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(tmp_path):
    """trainer=ddp_cpu: two processes share the epoch, so each takes half the steps."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    args = [
        "task=train",
        "trainer=ddp_cpu",
        "model=c2d_tiny",
        "dataset=pfm",
        "dataset.num_places=2",
        "dataset.num_motions=2",
        "dataset.num_samples=64",
        "train.val_clips=32",
        "trainer.max_epochs=2",
        *TINY[:3],
        *TINY[4:],
        f"hydra.run.dir={tmp_path}",
    ]
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, str(root / "run.py"), *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["global_step"] == 4  # 64 clips / (16 per batch x 2 processes) x 2 epochs
    assert 0.0 <= record["val/acc"] <= 1.0 and os.path.isfile(record["checkpoint"])


def test_shuffled_drop_plot_draws_one_bar_per_model_and_dataset():
    from stbias.plotting.training import shuffled_drop

    rows = [
        {"model": "a", "dataset": "x", "drop": 0.5},
        {"model": "b", "dataset": "x", "drop": -0.1},
        {"model": "a", "dataset": "y", "drop": 0.25},
    ]
    fig = shuffled_drop(rows, "t")
    heights = sorted(round(p.get_height(), 6) for p in fig.axes[0].patches)
    assert heights == [-10.0, 25.0, 50.0]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["a", "b"]


def test_lightning_habits_work_on_the_trainer_node(compose, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = make_cfg(
        compose,
        tmp_path / "run",
        "model=c2d_tiny",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=1",
        "+trainer.callbacks=[{_target_: pytorch_lightning.callbacks.Timer}]",
        dataset=SQUARE,
    )
    record, objects = train.run(cfg)
    assert record["epochs"] == 2 and record["global_step"] == 2  # max_epochs and limit_* mean it
    timers = [c for c in objects["trainer"].callbacks if type(c).__name__ == "Timer"]
    assert len(timers) == 1 and timers[0].time_elapsed("train") > 0


def test_a_checkpoint_brings_the_input_it_was_trained_at(compose, tmp_path, monkeypatch):
    from stbias.tasks.probe import probe

    monkeypatch.chdir(tmp_path)
    overrides = ["model.input.frames=8", "model.input.size=32", "trainer.max_epochs=1"]
    cfg = compose(
        "task=train",
        "model=i3d_tiny",
        "dataset=brushmnist_small",
        "dataset.num_samples=32",
        "train.val_clips=16",
        *overrides,
        *TINY[4:],
    )
    with open_dict(cfg):
        cfg.train.output_dir = str(tmp_path / "trained")
    trained, _ = train.run(cfg)
    probe_cfg = compose(
        "model=i3d_tiny",
        f"model.checkpoint={trained['checkpoint']}",
        "dataset=brushmnist_small",
        "probe.num_clips=4",
        "probe.batch_size=4",
        f"probe.cache_dir={tmp_path / 'c'}",
        *TINY[4:],
    )
    assert probe_cfg.model.input.size == 64  # the config as composed...
    record, _, objects = probe(probe_cfg)
    spec = record["config"]["model"]["input"]
    assert (spec["size"], spec["frames"], spec["channels"]) == (32, 8, 1)  # ...and what ran
    assert record["config"]["dataset"]["size"] == 32
    assert objects["dataset"][0]["video"].shape == (8, 32, 32, 1)
    assert record["config"]["model"]["builder"]["num_classes"] == 100


def test_an_interrupted_quickstart_training_resumes_in_place(compose, tmp_path, caplog):
    from stbias.studies import quickstart

    small = [
        f"task.cache_dir={tmp_path}",
        "task.train.clips=32",
        "task.train.val_clips=16",
        "task.train.max_epochs=2",
        "trainer.enable_progress_bar=false",
    ]
    cfg = compose(*small)
    c2d = quickstart.quickstart_models(cfg)[0]
    first = quickstart.train_config(cfg, c2d)
    folder = base.cache_folder(cfg, c2d.name, first)
    # an interrupted first run: one epoch done, its last.ckpt written, no results.json
    with open_dict(first):
        first.train.output_dir = folder
        first.trainer.max_epochs = 1
    train.run(first)
    os.remove(os.path.join(folder, "results.json"))
    caplog.set_level("INFO")
    record = quickstart.ensure_trained(cfg, c2d)
    assert "resuming the interrupted training" in caplog.text
    assert record["epochs"] == 2 and record["global_step"] == 2 * 2  # 32 clips / 16, twice
    assert sorted(os.listdir(os.path.join(folder, "checkpoints"))) == ["best.ckpt", "last.ckpt"]


def _epoch_of(path):
    return torch.load(path, map_location="cpu", weights_only=True)["epoch"]


def test_last_ckpt_holds_the_final_epoch_after_a_non_improving_one(compose, tmp_path):
    """``last.ckpt`` is the final weights even when the last epochs do not improve ``val/acc``;
    ``best.ckpt`` keeps the best epoch."""
    cfg = make_cfg(
        compose,
        tmp_path,
        "model=c2d_tiny",
        "logger=csv",
        "trainer.max_epochs=3",
        "train.optimizer.lr=0",  # nothing learns: epochs 1 and 2 cannot beat epoch 0
        dataset=dict(SQUARE, num_samples=32),
    )
    record, objects = train.run(cfg)
    rows = list(csv.DictReader(open(glob.glob(str(tmp_path / "csv/*/metrics.csv"))[0])))
    accs = [float(r["val/acc"]) for r in rows if r.get("val/acc")]
    assert len(accs) == 3 and max(accs[1:]) <= accs[0]  # the premise: no later improvement
    assert record["epochs"] == 3
    assert _epoch_of(record["checkpoint"]) == 2 and record["checkpoint"].endswith("last.ckpt")
    assert _epoch_of(record["best_checkpoint"]) == 0
    final = torch.load(record["checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    for key, value in objects["module"].state_dict().items():
        assert torch.equal(final[key], value), key


KILL_AT_EPOCH = """
import os, signal, sys
import torch
torch.set_num_threads({threads})  # as this process: the same float reductions
sys.path.insert(0, {tests!r})
import test_train
from conftest import compose_config
from stbias.lit import train_data
from stbias.tasks import train


class Killer(train_data.EpochSetter):
    def on_train_batch_end(self, trainer, *args):
        if trainer.current_epoch == {epoch} and args[-1] == 1:  # in the middle of the epoch
            os.kill(os.getpid(), signal.SIGKILL)


train.EpochSetter = Killer
train.run(test_train.make_cfg(compose_config, {folder!r}, *{args!r}, dataset={dataset!r}))
"""


@pytest.mark.slow
def test_a_training_killed_mid_epoch_and_resumed_ends_bit_for_bit_where_one_run_does(
    compose, tmp_path
):
    """SIGKILL in epoch 2 of 3, resumed from ``last.ckpt`` (epoch 1): the same data order,
    dropout draws, weights and numbers as the uninterrupted run; the record says what resumed."""
    args = [
        "model=i3d_tiny",
        "model.builder.dropout=0.5",  # dropout draws from the global generator
        "trainer.max_epochs=3",
        "train.optimizer.lr=0.01",
    ]
    dataset = dict(SQUARE, num_samples=48)
    whole, objects = train.run(make_cfg(compose, tmp_path / "whole", *args, dataset=dataset))
    cut = tmp_path / "cut"
    script = KILL_AT_EPOCH.format(
        threads=torch.get_num_threads(),
        tests=str(Path(__file__).parent),
        epoch=2,
        folder=str(cut),
        args=args,
        dataset=dataset,
    )
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    last = cut / "checkpoints" / "last.ckpt"
    assert _epoch_of(last) == 1 and not (cut / "results.json").exists()
    again = make_cfg(compose, cut, *args, f"train.resume={last}", dataset=dataset)
    resumed, resumed_objects = train.run(again)
    for key in ("val/acc", "val/loss", "train/loss", "global_step", "epochs"):
        assert resumed[key] == whole[key], key
    mine = resumed_objects["module"].state_dict()
    for key, value in objects["module"].state_dict().items():
        assert torch.equal(mine[key], value), key
    assert resumed["resumed_from"] == str(last) and resumed["resumed_after_epochs"] == 2
    assert whole["resumed_from"] is None and resumed["minutes"] > 0
    # the same bytes (so the same sha256) as the uninterrupted run's, in another folder
    for name in ("last.ckpt", "best.ckpt"):
        mine = (cut / "checkpoints" / name).read_bytes()
        assert mine == (tmp_path / "whole" / "checkpoints" / name).read_bytes(), name
