"""The studies wing: one cache key, sub-runs composed from a node, the dispatch and its layers."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from stbias.config import compose
from stbias.errors import StbiasError
from stbias.runner import RUNS, STUDIES, run_task
from stbias.studies import base
from stbias.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]


def test_a_sub_run_picks_options_replaces_keys_and_keeps_the_studys_seed_and_trainer():
    cfg = compose(["seed=7", "trainer.max_epochs=3"])
    node = compose(["model=i3d_tiny"]).model
    sub = base.sub_run(
        cfg,
        {
            "defaults": [{"task": "train"}, "dataset=pfm"],
            "model": node,
            "dataset.num_samples": 64,
            "train.optimizer.lr": 0.5,
        },
    )
    assert sub.task.name == "train" and sub.dataset._target_.endswith("PlacesFacesMNIST")
    assert sub.model.name == "i3d_tiny" and "models" not in sub.model  # replaced, not merged
    assert sub.dataset.num_samples == 64 and sub.train.optimizer.lr == 0.5
    assert sub.seed == 7 and sub.trainer.max_epochs == 3
    assert sub.logger == compose(["logger=none"]).logger  # a sub-run logs nothing of its own


def _train_cfg(*overrides):
    cfg = compose(["task=train", "model=c2d_tiny", "dataset=pfm", *overrides])
    with open_dict(cfg):
        cfg.train.output_dir = None
    return cfg


def test_one_training_key_changes_with_what_trains_and_not_with_where_or_what_is_shown():
    key = base.training_key(_train_cfg())
    assert key == base.training_key(_train_cfg())
    assert key != base.training_key(_train_cfg("seed=1"))
    assert key != base.training_key(_train_cfg("train.optimizer.lr=0.1"))
    assert key != base.training_key(_train_cfg("trainer.max_epochs=1"))
    moved = _train_cfg("trainer.enable_progress_bar=false")
    with open_dict(moved):
        moved.train.output_dir = "/elsewhere"
        moved.train.resume = "/elsewhere/checkpoints/last.ckpt"
    assert base.training_key(moved) == key


def test_every_task_option_reaches_a_function_of_its_own_layer():
    options = sorted(p.stem for p in (ROOT / "stbias/conf/task").glob("*.yaml"))
    assert sorted(RUNS) == options
    assert not set(TASKS) & set(STUDIES)
    for name, target in RUNS.items():
        module, func = target.split(":")
        layer = "stbias.studies." if name in STUDIES else "stbias.tasks."
        assert module.startswith(layer), (name, module)
        assert callable(getattr(importlib.import_module(module), func))


def test_an_unknown_task_names_the_valid_ones():
    cfg = compose(["task=train"])
    with open_dict(cfg):
        cfg.task.name = "nope"
    with pytest.raises(StbiasError, match="unknown task 'nope'; valid tasks: center_bias, compare"):
        run_task(cfg)


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


@pytest.mark.parametrize("layer", ["tasks", "api", "lit", "metrics", "plotting", "models", "data"])
def test_nothing_below_the_studies_imports_them(layer):
    paths = [ROOT / "stbias" / f"{layer}.py"] + sorted((ROOT / "stbias" / layer).rglob("*.py"))
    for path in (p for p in paths if p.exists()):
        upward = {m for m in _imported(path) if m.startswith(("stbias.studies", "stbias.runner"))}
        assert not upward, f"{path.relative_to(ROOT)} imports {sorted(upward)}"


def test_a_sub_run_composes_from_a_yaml_node_with_defaults():
    node = OmegaConf.create(
        "defaults: [{task: train}, dataset=pfm]\ntrain.batch_size: 3\ndataset.num_places: 2\n"
    )
    sub = base.sub_run(compose(["seed=3"]), node)
    assert sub.task.name == "train" and sub.dataset._target_.endswith("PlacesFacesMNIST")
    assert (sub.train.batch_size, sub.dataset.num_places, sub.seed) == (3, 2, 3)


# Scene bias (Byvshev et al., Appendix A) -----------------------------------------------------


def test_a_static_clips_linear_probe_equals_the_2d_models_when_the_3d_model_is_inflated():
    import numpy as np
    import torch

    from stbias.data.sources import place_crops
    from stbias.metrics.scene import linear_probe
    from stbias.models import create
    from stbias.models.inflate import inflate
    from stbias.studies.scene_bias import probe_features

    torch.manual_seed(0)
    source = create("c2d_tiny", num_classes=4, frames=6, size=32).eval()
    inflated = inflate(source, 3).eval()
    other = create("i3d_tiny", num_classes=4, frames=6, size=32).eval()
    # the study's sizes (18 places, 32 + 16 crops each): with a fit stopped at scikit-learn's
    # default tolerance, float rounding of conv3d against conv2d flipped a prediction here
    train_x, train_y = place_crops(None, 18, 32, 32, 10)
    test_x, test_y = place_crops(None, 18, 16, 32, 11)
    images = [torch.from_numpy(x) for x in (train_x, test_x)]

    def probe(entry, model):
        feats = [probe_features(entry, model, t, 16) for t in images]
        fit = linear_probe(feats[0], train_y, feats[1], test_y, seed=0)
        assert fit.converged
        return feats, fit[:2]

    # the 2D source on the image (one frame), the inflated net on static clips of 6 frames
    flat, (pred_2d, acc_2d) = probe({"frames": 1}, source)
    static, (pred_3d, acc_3d) = probe({}, inflated)
    np.testing.assert_allclose(static[0], flat[0], rtol=1e-4, atol=1e-5)
    assert (pred_3d == pred_2d).all() and acc_3d == acc_2d
    # a 3D net of its own is no inflated copy: other features
    own, _ = probe({}, other)
    assert not np.allclose(own[0], flat[0], atol=1e-3)


def test_table_a4s_fine_tuned_regime_starts_from_the_fixed_probe_and_trains_every_weight():
    import torch
    from omegaconf import OmegaConf

    from stbias.data.sources import place_crops
    from stbias.metrics.scene import linear_probe
    from stbias.models import create
    from stbias.studies.scene_bias import fine_tune_probe, probe_features

    train_x, train_y = place_crops(None, 6, 12, 32, 10)
    test_x, test_y = place_crops(None, 6, 6, 32, 11)
    train = (torch.from_numpy(train_x), train_y)
    test = (torch.from_numpy(test_x), test_y)

    def tuned(epochs):
        torch.manual_seed(0)
        model = create("c2d_tiny", num_classes=4, frames=6, size=32).eval()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        feats = [probe_features({}, model, x, 16) for x, _ in (train, test)]
        start = linear_probe(feats[0], train_y, feats[1], test_y)
        settings = OmegaConf.create({"epochs": epochs, "lr": 1e-3, "batch_size": 16})
        return model, before, start, fine_tune_probe({}, model, train, test, start, settings, 3)

    # no step taken: the network and the fixed regime's classifier, prediction for prediction
    model, before, start, (predictions, acc) = tuned(0)
    assert (predictions == start.predictions).all() and acc == start.accuracy
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())

    model, before, start, (predictions, acc) = tuned(3)
    # every convolution moved (the classifier after the probed layer gets no gradient)
    moved = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    convs = [k for k in before if k.endswith(".weight") and before[k].ndim == 5]
    assert convs and set(convs) <= set(moved)
    assert acc == (predictions == test_y).mean() and acc > 3 / 6  # chance: 1/6
    # the same seed: the same weights and predictions
    again, _, _, (predictions_again, acc_again) = tuned(3)
    assert (predictions_again == predictions).all() and acc_again == acc
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


def test_table_a3_splits_the_videos_by_dominant_place_and_counts_each_group():
    from stbias.studies.scene_bias import fig_a12, table_a3

    rows = [
        {"place": p, "place_name": f"p{p}", "correct": c, "score": s}
        for p, c, s in [
            (0, True, 1.0),
            (0, False, 0.5),
            (0, True, 0.75),
            (2, True, 0.25),
            (1, False, 1.0),
            (3, True, 0.5),
        ]
    ]
    common, rare = table_a3(rows)
    # place 0 holds 3 of 6 (half, not more): with place 1 (the lower index of 1, 2, 3) 4 of 6
    assert common == {
        "group": "common",
        "places": 2,
        "videos": 4,
        "accuracy": 0.5,
        "place_names": "p0, p1",
    }
    assert (rare["places"], rare["videos"], rare["accuracy"]) == (2, 2, 1.0)
    curve = {p["score"]: p["share"] for p in fig_a12(rows)}
    assert (curve[0.0], curve[0.5], curve[0.75], curve[1.0]) == (1.0, 5 / 6, 3 / 6, 2 / 6)


def test_the_places365_classifier_labels_frames_from_a_release_file(compose, tmp_path):
    import torch
    import torchvision

    from stbias.studies.scene_bias import place_classifier

    released = torchvision.models.resnet18(num_classes=365)
    path = tmp_path / "resnet18_places365.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in released.state_dict().items()}}, path)
    cfg = compose(
        "task=scene_bias",
        "task.places.arch=resnet18",
        f"task.places.weights={path}",
        "task.places.size=64",
    )
    classifier, about = place_classifier(cfg)
    frames = torch.randint(0, 255, (3, 48, 48, 3), dtype=torch.uint8)
    expected = released.eval()(classifier.inputs(frames)).argmax(1).numpy()
    assert (classifier.predict(frames) == expected).all()
    assert about["classifier"] == "resnet18 Places365"
    cfg = compose("task=scene_bias", "task.places.arch=resnet50")
    with pytest.raises(StbiasError, match="needs task.places.weights"):
        place_classifier(cfg)


def test_the_embedded_place_classifier_trains_once_and_is_read_back(compose, tmp_path):
    from stbias.studies.scene_bias import train_tiny_places

    cfg = compose(
        "task=scene_bias",
        f"task.cache_dir={tmp_path}",
        "task.places.num_places=3",
        "task.places.train_per_class=8",
        "task.places.test_per_class=4",
        "task.places.max_epochs=1",
    )
    model, record = train_tiny_places(cfg)
    again, cached = train_tiny_places(cfg)
    assert cached == record and 0.0 <= record["val/acc"] <= 1.0
    for key, value in model.state_dict().items():
        assert (again.state_dict()[key] == value).all()
    assert len(list(tmp_path.glob("places-*/places.pt"))) == 1


def test_the_embedded_place_classifier_repeats_itself_from_its_settings(compose, tmp_path):
    import torch

    from stbias.studies.scene_bias import train_tiny_places

    settings = [
        "task=scene_bias",
        "task.places.num_places=3",
        "task.places.train_per_class=8",
        "task.places.test_per_class=4",
        "task.places.max_epochs=1",
    ]
    torch.manual_seed(123)  # whatever the global generator holds before
    first, _ = train_tiny_places(compose(*settings, f"task.cache_dir={tmp_path / 'a'}"))
    torch.manual_seed(456)
    second, _ = train_tiny_places(compose(*settings, f"task.cache_dir={tmp_path / 'b'}"))
    for key, value in first.state_dict().items():
        assert torch.equal(second.state_dict()[key], value), key


def test_a_gpu_study_without_a_gpu_is_one_line(compose):
    import torch

    from stbias.studies.scene_bias import device_of

    assert device_of(compose("task=scene_bias")) == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(StbiasError, match="no CUDA device"):
            device_of(compose("task=scene_bias", "trainer=gpu"))
