"""Every option of every config group composes with the root config and instantiates."""

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from stbias.errors import StbiasError
from stbias.runner import RUNS as TASKS
from stbias.tasks.loggers import build_logger
from stbias.tasks.model_setup import build_model
from stbias.tasks.trainer_setup import build_trainer

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra")
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


def stbias_error(call, match):
    """The StbiasError that ``call`` raises, also when Hydra's instantiate wraps it."""
    with pytest.raises(Exception) as err:
        call()
    cause = err.value
    while cause is not None and not isinstance(cause, StbiasError):
        cause = cause.__cause__
    assert cause is not None, f"expected a StbiasError, got {err.value!r}"
    assert match in str(cause), str(cause)
    return cause


def compose_cfg(*overrides, hydra_config=False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra_config)


def test_the_binding_groups_exist():
    binding = {
        "task",
        "model",
        "dataset",
        "stylization",
        "metric",
        "trainer",
        "logger",
        "experiment",
    }
    assert binding <= set(GROUPS)
    cfg = compose_cfg()
    for key in ("seed", "probe"):
        assert key in cfg
    for key in ("layers", "num_clips", "batch_size"):
        assert key in cfg.probe
    assert {"probe", "train", "layers", "weights", "quickstart"} <= set(TASKS)
    assert {o for g, o in OPTIONS if g == "metric"} >= {"layerwise", "unitwise", "asdt", "selfconv"}


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_instantiates(group, option, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = compose_cfg(f"{group}={option}")
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    node = cfg.get(group)
    if group == "model":
        if option == "custom":
            stbias_error(lambda: build_model(cfg.model), "constructor")
            return
        if node.get("models"):  # a set of models (model=quickstart): each is an option
            assert {str(m) for m in node.models} <= {o for g, o in OPTIONS if g == "model"}
            assert node.input.size and cfg.task.name == "quickstart"
            return
        if node.get("requires"):
            pytest.importorskip(node.requires)
        assert set(node.layers) == set(node.channels), "every alias declares its channels"
        assert isinstance(build_model(cfg.model), torch.nn.Module)
    elif group == "dataset":
        try:  # embedded data generates its clips; a reader of released data needs its root
            dataset = instantiate(node)
        except Exception:
            stbias_error(lambda: instantiate(node), "dataset.root")
        else:
            sample = dataset[0]
            assert sample["video"].dtype == torch.uint8 and sample["video"].ndim == 4
    elif group == "stylization":
        if option == "texture":
            assert instantiate(node).stylizer.num_styles >= 4
        else:
            # without its files the option says which key to set
            stbias_error(lambda: instantiate(node), "stylization.stylizer.")
    elif group == "task":
        assert node.name in TASKS
    elif group == "metric":
        assert node.name == option
    elif group == "trainer":
        if node.accelerator == "gpu" and not torch.cuda.is_available():
            pytest.skip("needs a CUDA device")
        trainer = build_trainer(node)
        assert isinstance(trainer, pl.Trainer)
        assert trainer.num_devices == (node.devices if node.devices != -1 else trainer.num_devices)
    elif group == "logger":
        logger = build_logger(node, str(tmp_path))
        if option == "none":
            assert logger is False
        else:
            assert type(logger).__name__.lower().startswith(option)
            if option == "wandb":
                logger.experiment.finish()
    else:  # experiment, debug: global overrides
        assert OmegaConf.to_container(cfg) != OmegaConf.to_container(compose_cfg())


def test_the_slurm_launcher_config_sizes_jobs_from_the_trainer():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = compose_cfg(
        "hydra/launcher=slurm", "trainer=ddp_cpu", "trainer.devices=4", hydra_config=True
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.gpus_per_node == 4 and launcher.tasks_per_node == 4
    assert launcher.nodes == cfg.trainer.num_nodes


def test_the_default_is_a_config_and_overrides_keep_it():
    for overrides in ([], ["logger=none"], ["seed=1"], ["metric=layerwise"]):
        cfg = compose_cfg(*overrides)
        assert cfg.task.name == "quickstart" and cfg.model.name == "quickstart", overrides
    headline = compose_cfg("model=i3d", "dataset=ssv2", "metric=unitwise")
    assert headline.task.name == "probe" and headline.model.name == "i3d"


def test_weight_metrics_select_task_weights_in_the_composed_config():
    for metric in ("asdt", "selfconv"):
        assert compose_cfg(f"metric={metric}", "model=i3d").task.name == "weights"
    # the command line still decides when it names the task
    assert compose_cfg("metric=asdt", "model=i3d", "task=probe").task.name == "probe"


@pytest.mark.parametrize(
    "model,size,short_side,frames",
    [
        ("i3d", 224, 256, 8),
        ("r3d_18", 112, 128, 16),
        ("x3d_s", 160, 182, 13),
        ("i3d_tiny", 64, None, 16),
    ],
)
def test_clip_geometry_follows_the_model(model, size, short_side, frames):
    cfg = compose_cfg(f"model={model}", "dataset=kinetics")
    data = OmegaConf.to_container(cfg.dataset, resolve=True)
    assert (data["size"], data["short_side"], data["num_frames"]) == (size, short_side, frames)
    assert data["sampling_rate"] == cfg.model.input.sampling_rate
    own = OmegaConf.to_container(
        compose_cfg(f"model={model}", "dataset=kinetics", "dataset.short_side=300").dataset,
        resolve=True,
    )
    assert own["short_side"] == 300 and own["size"] == size  # set on its own, it applies


def test_a_dataset_value_that_contradicts_the_model_names_both_keys():
    from stbias.models.inputs import InputSpec
    from stbias.tasks.dataset_setup import build_dataset

    cfg = compose_cfg("model=i3d", "dataset=kinetics", "dataset.size=112")
    spec = InputSpec.from_dict(OmegaConf.to_container(cfg.model.input, resolve=True))
    stbias_error(
        lambda: build_dataset(cfg.dataset, spec), "dataset.size=112 conflicts with model.input.size"
    )
    small = compose_cfg("model=i3d", "dataset=kinetics", "dataset.short_side=200")
    stbias_error(lambda: build_dataset(small.dataset, spec), "dataset.short_side=200 is smaller")


def test_published_weights_are_declared_where_the_builders_have_them():
    from stbias.tasks.model_setup import models_with_published_weights

    have = set(models_with_published_weights())
    assert {"i3d", "slowfast", "r3d_18", "x3d_m", "mvit"} <= have
    assert not have & {"i3d_inception", "clstm", "i3d_tiny", "c2d_tiny", "custom", "fast"}


def test_a_sweep_is_counted_from_its_overrides_and_the_sweeper_params():
    from stbias.reporting import sweep_points

    assert sweep_points(["metric.lam=0.1,0.3,0.5", "model=i3d_tiny"]) == (3, ["metric.lam"])
    assert sweep_points(["seed=range(4)"], {"probe.layers": "[res2],[res3]"}) == (
        8,
        ["seed", "probe.layers"],
    )
    assert sweep_points(["model=glob(i3d*)"]) == (None, [])  # a glob is not counted
