"""Every option of every config group composes with the root config and instantiates."""

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from stbias.errors import StbiasError
from stbias.tasks import TASKS
from stbias.tasks.common import build_logger, build_model, build_trainer

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
