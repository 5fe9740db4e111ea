"""Video instance segmentation: the Hungarian matcher, the set loss, the training objective and
the VIS study's figure, on a small instance model and dataset of the VisTR interface."""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf, open_dict
from torch import nn

from stbias import results
from stbias.errors import StbiasError
from stbias.lit.instances import (
    SetCriterion,
    VideoInstanceSegmenter,
    mask_boxes,
    match,
    match_costs,
    matched_iou,
    pairwise_mask_costs,
)
from stbias.models.inputs import InputSpec
from stbias.runner import run_task
from stbias.studies import vis
from stbias.tasks import train
from stbias.validation import validate

BIG = 30.0  # a mask or class logit that is as good as certain


class TinyInstances(nn.Module):
    """A VisTR-interface model: features at 1/4 size, learnt queries, dot-product masks."""

    def __init__(self, num_classes: int = 2, queries: int = 4, width: int = 16, in_channels=3):
        super().__init__()
        self.stem = nn.Conv3d(in_channels, width, (1, 4, 4), stride=(1, 4, 4))
        self.mix = nn.Conv3d(width, width, (3, 3, 3), padding=1)
        self.queries = nn.Parameter(torch.randn(queries, width) * 0.1)
        self.cls = nn.Linear(width, num_classes + 1)
        self.box = nn.Linear(width, 4)

    def forward(self, x):
        feat = torch.relu(self.mix(torch.relu(self.stem(x))))  # (B, D, T, h, w)
        masks = torch.einsum("nd,bdthw->bnthw", self.queries, feat)
        pooled = torch.einsum("bnthw,bdthw->bnd", masks.sigmoid(), feat) / feat[0, 0].numel()
        q = self.queries[None] + pooled
        boxes = self.box(q).sigmoid()[:, :, None].expand(-1, -1, x.shape[2], -1)
        return {"pred_logits": self.cls(q), "pred_masks": masks, "pred_boxes": boxes}


class SquareInstances(torch.utils.data.Dataset):
    """Clips of two or three squares moving on noise; a square's class is its colour."""

    def __init__(self, num_samples=16, num_frames=4, size=32, split="train", max_instances=3):
        self.num_samples, self.frames, self.size = num_samples, num_frames, size
        self.max_instances, self.seed = max_instances, 0 if split == "train" else 1
        self.num_classes = 2

    def __len__(self):
        return self.num_samples

    def __getitem__(self, index):
        rng = np.random.default_rng((self.seed, index))
        t, s = self.frames, self.size
        video = rng.integers(0, 60, size=(t, s, s, 3)).astype(np.uint8)
        masks = np.zeros((self.max_instances, t, s, s), dtype=bool)
        labels = np.full(self.max_instances, -1, dtype=np.int64)
        for k in range(int(rng.integers(2, self.max_instances + 1))):
            labels[k] = int(rng.integers(0, 2))
            y, x = rng.integers(0, s - 12, size=2)
            dy, dx = rng.integers(-2, 3, size=2)
            for f in range(t):
                yy, xx = np.clip([y + f * dy, x + f * dx], 0, s - 10)
                masks[k, f, yy : yy + 10, xx : xx + 10] = True
                video[f, yy : yy + 10, xx : xx + 10] = (230, 40, 40) if labels[k] else (40, 40, 230)
        return {
            "video": torch.from_numpy(video),
            "instance_masks": torch.from_numpy(masks),
            "instance_labels": torch.from_numpy(labels),
            "index": index,
        }


def _perfect(masks: torch.Tensor, labels: torch.Tensor, queries: int, classes: int = 2):
    """Logits that predict every instance exactly, in order, and no object for the rest."""
    k = len(labels)
    class_logits = torch.full((queries, classes + 1), -BIG)
    class_logits[torch.arange(k), labels] = BIG
    class_logits[k:, classes] = BIG
    mask_logits = torch.full((queries, *masks.shape[1:]), -BIG)
    mask_logits[:k] = torch.where(masks.bool(), BIG, -BIG)
    return class_logits, mask_logits


def _random_masks(k=3, shape=(2, 8, 8), seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(k, *shape, generator=gen) > 0.6


# --- the matcher --------------------------------------------------------------------------------


def test_pairwise_mask_costs_equal_the_losses_of_each_pair():
    gen = torch.Generator().manual_seed(1)
    logits, targets = torch.randn(5, 30, generator=gen), torch.rand(3, 30, generator=gen)
    bce, dice = pairwise_mask_costs(logits, targets)
    for n, k in itertools.product(range(5), range(3)):
        want = F.binary_cross_entropy_with_logits(logits[n], targets[k])
        assert float(bce[n, k]) == pytest.approx(float(want), rel=1e-5)
        p = logits[n].sigmoid()
        want_dice = 1 - (2 * (p * targets[k]).sum() + 1) / (p.sum() + targets[k].sum() + 1)
        assert float(dice[n, k]) == pytest.approx(float(want_dice), rel=1e-5)


def test_perfect_predictions_cost_nothing_and_match_the_identity():
    masks, labels = _random_masks(), torch.tensor([1, 0, 1])
    class_logits, mask_logits = _perfect(masks, labels, queries=5)
    bce, dice = pairwise_mask_costs(mask_logits.flatten(1), masks.flatten(1).float())
    np.testing.assert_allclose(torch.diagonal(bce[:3]).numpy(), 0, atol=1e-6)
    np.testing.assert_allclose(torch.diagonal(dice[:3]).numpy(), 0, atol=1e-6)
    assert (bce[:3] + dice[:3]).min(0).values.tolist() == pytest.approx([0, 0, 0], abs=1e-6)
    pred, target = match(match_costs(class_logits, mask_logits, labels, masks.float()))
    assert pred.tolist() == [0, 1, 2] and target.tolist() == [0, 1, 2]


def test_a_permuted_prediction_set_is_matched_back():
    masks, labels = _random_masks(k=4, seed=3), torch.tensor([0, 1, 1, 0])
    class_logits, mask_logits = _perfect(masks, labels, queries=6)
    perm = torch.tensor([4, 2, 0, 5, 1, 3])  # prediction i now sits at query perm[i]
    shuffled_cls, shuffled_masks = torch.empty_like(class_logits), torch.empty_like(mask_logits)
    shuffled_cls[perm], shuffled_masks[perm] = class_logits, mask_logits
    pred, target = match(match_costs(shuffled_cls, shuffled_masks, labels, masks.float()))
    assert target.tolist() == [0, 1, 2, 3] and pred.tolist() == perm[:4].tolist()


@pytest.mark.parametrize("seed", range(5))
def test_the_matching_is_the_brute_force_minimum_over_assignments(seed):
    gen = torch.Generator().manual_seed(seed)
    n, k = 5, 3
    cost = match_costs(
        torch.randn(n, 4, generator=gen),
        torch.randn(n, 2, 6, 6, generator=gen),
        torch.randint(0, 3, (k,), generator=gen),
        torch.rand(k, 2, 6, 6, generator=gen),
    ).double()
    pred, target = match(cost)
    best = min(
        sum(float(cost[p, j]) for j, p in enumerate(rows))
        for rows in itertools.permutations(range(n), k)
    )
    assert float(cost[pred, target].sum()) == pytest.approx(best, abs=1e-9)
    assert sorted(target.tolist()) == list(range(k)) and len(set(pred.tolist())) == k


def test_more_instances_than_queries_is_one_line():
    with pytest.raises(StbiasError, match="3 instances in a clip but the model makes 2"):
        match(torch.zeros(2, 3))


# --- the loss and the metric -------------------------------------------------------------------


def test_mask_boxes_are_the_masks_extents():
    masks = torch.zeros(2, 8, 16, dtype=torch.bool)
    masks[0, 2:6, 4:12] = True  # rows 2..5, columns 4..11
    boxes, visible = mask_boxes(masks)
    np.testing.assert_allclose(boxes[0].numpy(), [8 / 16, 4 / 8, 8 / 16, 4 / 8])
    assert visible.tolist() == [True, False] and boxes[1].tolist() == [0, 0, 0, 0]


def _batch_outputs(masks, labels, queries=4, classes=2, scale=1):
    """Perfect outputs of a one-clip batch, masks at 1/``scale`` size, boxes from the masks."""
    class_logits, mask_logits = _perfect(masks, labels, queries, classes)
    small = mask_logits[:, :, ::scale, ::scale]
    boxes, _ = mask_boxes(small > 0)
    return {
        "pred_logits": class_logits[None],
        "pred_masks": small[None],
        "pred_boxes": boxes[None],
    }


def test_perfect_predictions_have_zero_loss_and_unit_iou():
    masks = torch.zeros(3, 2, 8, 8, dtype=torch.bool)
    masks[0, :, 0:4, 0:4] = masks[1, :, 4:8, 2:6] = True
    labels = torch.tensor([1, 0, -1])  # the third row is padding
    outputs = _batch_outputs(masks[:2], labels[:2])
    criterion = SetCriterion()
    found = criterion.matches(outputs, masks[None], labels[None])
    assert found[0]["pred"].tolist() == [0, 1] and found[0]["labels"].tolist() == [1, 0]
    terms = criterion(outputs, found)
    for key in ("class", "bce", "dice", "box", "loss"):
        assert float(terms[key]) == pytest.approx(0.0, abs=1e-6), key
    assert matched_iou(outputs["pred_masks"], found).tolist() == [1.0, 1.0]


def test_a_clip_without_instances_targets_no_object_everywhere():
    masks = torch.zeros(2, 3, 2, 16, 16, dtype=torch.bool)
    masks[0, 0, :, :8] = True
    labels = torch.tensor([[1, -1, -1], [-1, -1, -1]])  # the second clip has none
    one = _batch_outputs(masks[0, :1], labels[0, :1], queries=2, scale=4)
    outputs = {k: torch.cat([v, v]) for k, v in one.items()}
    criterion = SetCriterion()
    found = criterion.matches(outputs, masks, labels)
    assert [len(m["pred"]) for m in found] == [1, 0]
    terms = criterion(outputs, found)
    # the second clip's first query predicts class 1 (logit BIG, no object -BIG): cross-entropy
    # 2 BIG at the no-object weight 0.1, in a mean weighted 1 + 3 x 0.1
    assert float(terms["class"]) == pytest.approx(0.1 * 2 * BIG / 1.3, rel=1e-4)
    assert float(terms["bce"] + terms["dice"]) == pytest.approx(0.0, abs=1e-6)
    assert matched_iou(outputs["pred_masks"], found).tolist() == [1.0]


def test_the_loss_of_a_wrong_class_is_its_cross_entropy():
    masks = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    masks[0, 0, :2] = True
    labels = torch.tensor([0])
    outputs = _batch_outputs(masks, labels, queries=2)
    outputs["pred_logits"][0, 0] = torch.tensor([0.0, 0.0, -BIG])  # unsure between 0 and 1
    criterion = SetCriterion(bce_weight=0, dice_weight=0, box_weight=0, no_object_weight=0.5)
    terms = criterion(outputs, criterion.matches(outputs, masks[None], labels[None]))
    # weighted mean: query 0 (weight 1) costs log 2, query 1 (no object, weight 0.5) nothing
    assert float(terms["loss"]) == pytest.approx(np.log(2) / 1.5, rel=1e-5)


def test_iou_upsamples_the_predictions_to_the_masks():
    masks = torch.zeros(1, 2, 16, 16, dtype=torch.bool)
    masks[0, :, :8] = True  # a straight edge: bilinear upsampling rounds corners off
    labels = torch.tensor([1])
    outputs = _batch_outputs(masks, labels, queries=2, scale=4)
    assert outputs["pred_masks"].shape[-2:] == (4, 4)
    criterion = SetCriterion()
    found = criterion.matches(outputs, masks[None], labels[None])
    assert float(matched_iou(outputs["pred_masks"], found)[0]) == pytest.approx(1.0)
    outputs["pred_masks"][0, 0, 1] = -BIG  # the second frame missed: IoU 1/2
    assert float(matched_iou(outputs["pred_masks"], found)[0]) == pytest.approx(0.5)


def test_bad_weights_and_bad_outputs_are_one_line():
    with pytest.raises(StbiasError, match="dice_weight=-1"):
        SetCriterion(dice_weight=-1)
    module = VideoInstanceSegmenter(nn.Identity(), InputSpec(), torch.optim.SGD)
    with pytest.raises(StbiasError, match="needs a model returning a dict with pred_logits"):
        module(torch.zeros(1, 3, 2, 8, 8))


# --- the training objective -------------------------------------------------------------------


def _instance_cfg(compose, tmp_path, *overrides):
    cfg = compose(
        "task=train",
        "model=i3d_tiny",
        "dataset=brushmnist_small",
        "debug=fast",
        "train.batch_size=4",
        "train.optimizer.lr=0.01",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=4",
        "trainer.num_sanity_val_steps=0",
        *overrides,
        run_dir=tmp_path / "run",
    )
    model = {
        "name": "tiny_instances",
        "objective": "instance_segmentation",
        "builder": {"_target_": "test_vis_training.TinyInstances", "num_classes": 5, "queries": 4},
        "layers": {"stem": "stem", "mix": "mix"},
        "input": {"frames": 4, "size": 32, "mean": [0.5] * 3, "std": [0.25] * 3},
    }
    with open_dict(cfg):
        for key in ("builder", "layers", "channels", "probe_layers", "gradcam_layer"):
            cfg.model.pop(key)
        cfg.model = OmegaConf.merge(cfg.model, model)
        cfg.dataset = {
            "_target_": "test_vis_training.SquareInstances",
            "num_samples": 16,
            "split": "train",
        }
        cfg.train.output_dir = str(tmp_path / "run")
    return cfg


def test_instance_training_writes_checkpoints_and_the_mean_iou(compose, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    record, objects = train.run(_instance_cfg(compose, tmp_path))
    assert record["objective"] == "instance_segmentation" and 0 <= record["val/mIoU"] <= 1
    assert set(record["best"]) == {"val/mIoU"} and Path(record["best_checkpoint"]).is_file()
    # the dataset's two classes replace the builder's five; the checkpoint records it
    assert record["num_classes"] == 2
    assert record["model_overrides"]["builder"] == {"num_classes": 2}
    stored = json.loads((tmp_path / "run" / "results.json").read_text())
    assert stored["val/mIoU"] == record["val/mIoU"]
    assert stored["instance_segmentation"]["no_object_weight"] == 0.1
    # val/mIoU is the mean IoU of the last validation's instances (debug=fast: two batches),
    # recomputed here
    module, data = objects["module"].eval(), objects["data"]
    values = []
    with torch.no_grad():
        for batch in itertools.islice(data.val_dataloader(), 2):
            outputs, found, _ = module._step(batch)
            values.append(matched_iou(outputs["pred_masks"], found))
    assert float(torch.cat(values).mean()) == pytest.approx(record["val/mIoU"], abs=1e-5)
    # the checkpoint's keys are the network's under model., and model.checkpoint rebuilds it
    state = torch.load(record["checkpoint"], weights_only=True)["state_dict"]
    assert {k.split(".", 1)[0] for k in state} == {"model"}
    cfg = _instance_cfg(compose, tmp_path)
    with open_dict(cfg):
        cfg.model.checkpoint = record["checkpoint"]
    rebuilt = train.build_model(cfg.model)
    assert torch.equal(rebuilt.cls.weight, state["model.cls.weight"])
    assert rebuilt.cls.out_features == 3


def test_instance_training_refuses_classifier_keys_and_mask_free_data(compose, tmp_path):
    cfg = _instance_cfg(compose, tmp_path, "train.shuffle_frames=true")
    with pytest.raises(StbiasError, match="train.shuffle_frames apply to classifiers"):
        train.run(cfg)
    cfg = _instance_cfg(compose, tmp_path)
    with open_dict(cfg):
        cfg.dataset = {"_target_": "test_vis_training.NoMasks"}
    with pytest.raises(StbiasError, match="needs instance_masks, instance_labels"):
        train.run(cfg)


class NoMasks(SquareInstances):
    def __getitem__(self, index):
        sample = super().__getitem__(index)
        return {"video": sample["video"], "index": index}


def test_the_instance_settings_are_typed_and_checked(compose):
    validate(compose("task=train", "train.instance_segmentation.box_weight=0"))
    with pytest.raises(StbiasError, match="instance_segmentation.dice_weight='much'"):
        validate(compose("task=train", "train.instance_segmentation.dice_weight=much"))
    with pytest.raises(StbiasError, match="instance_segmentation.threshold=1.5 is not valid"):
        validate(compose("task=train", "train.instance_segmentation.threshold=1.5"))
    with pytest.raises(StbiasError, match="instance_segmentation.bce"):
        validate(compose("task=train", "+train.instance_segmentation.bce=1"))


# --- the VIS study and its figure ---------------------------------------------------------------


def _study_cfg(compose, tmp_path, *overrides):
    return compose(
        "task=vis_study",
        "model=vistr_tiny",
        "dataset=vis_synthetic",
        "debug=fast",
        "dataset.split=val",
        "task.train_on=vis_synthetic",
        "task.train.clips=16",
        "task.train.val_clips=8",
        "task.train.max_epochs=1",
        "task.train.batch_size=8",
        f"task.cache_dir={tmp_path / 'trained'}",
        f"probe.cache_dir={tmp_path / 'cache'}",
        *overrides,
        run_dir=tmp_path / "run",
    )


def test_the_vis_study_trains_once_probes_every_part_and_draws_its_numbers(
    compose, tmp_path, monkeypatch, caplog
):
    monkeypatch.chdir(tmp_path)
    summary, objects = run_task(_study_cfg(compose, tmp_path))
    parts = {
        "backbone": ["res2", "res3", "res4", "res5"],
        "encoder": ["enc1", "enc2", "enc3"],
        "decoder": ["dec1", "dec2", "dec3"],
    }
    assert summary["parts"] == parts and summary["unit_layer"] == "dec3"
    assert set(summary["layers"]) == {a for names in parts.values() for a in names}
    assert summary["trained_on"] == "vis_synthetic" and 0 <= summary["train"]["val/mIoU"] <= 1
    assert Path(summary["checkpoint"]).is_file() and summary["weights"].startswith("file:")
    assert [Path(f).name for f in objects["figures"]] == ["fig5.png", "fig5.pdf"]
    # the figure target reads the run back and draws its numbers: a bar per layer and class
    table = results.load(tmp_path / "run")
    fig = vis.vis_fig5(table, title="Fig. 5", labels={"vistr_tiny": "VisTR-tiny"})
    backbone, encoder, decoder, units = fig.axes
    heights = [p.get_height() for p in encoder.patches]
    want = [
        summary["layers"][a]["percent"][c]
        for a in parts["encoder"]
        for c in ("dynamic", "static", "residual")
    ]
    np.testing.assert_allclose(heights, want)
    counts = summary["layers"]["dec3"]["units"]
    total = sum(counts.values())
    np.testing.assert_allclose(
        [p.get_height() for p in units.patches],
        [100 * counts[c] / total for c in ("dynamic", "static", "joint", "residual")],
    )
    assert backbone.get_ylabel().startswith("VisTR-tiny")
    assert [t.get_text() for t in decoder.get_xticklabels()] == ["dec1", "dec2", "dec3"]
    # a second run reuses the trained checkpoint
    caplog.clear()
    with caplog.at_level("INFO"):
        again, _ = run_task(_study_cfg(compose, tmp_path))
    assert again["checkpoint"] == summary["checkpoint"]
    assert "trained before, from the cache" in caplog.text


def test_a_part_without_layers_is_one_line(compose, tmp_path):
    with pytest.raises(StbiasError, match=r"no layer alias of model vistr_tiny starts with the pr"):
        run_task(_study_cfg(compose, tmp_path, "+task.parts.neck=fpn"))
    with pytest.raises(StbiasError, match="task.unit_layer=res9 is not a probed layer"):
        run_task(_study_cfg(compose, tmp_path, "task.unit_layer=res9"))
