"""Every option of every config group composes with the root config and instantiates."""

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
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


def test_the_binding_groups_exist(compose):
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
    cfg = compose()
    for key in ("seed", "probe"):
        assert key in cfg
    for key in ("layers", "num_clips", "batch_size"):
        assert key in cfg.probe
    assert {"probe", "train", "layers", "weights", "quickstart"} <= set(TASKS)
    assert {o for g, o in OPTIONS if g == "metric"} >= {"layerwise", "unitwise", "asdt", "selfconv"}


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_instantiates(compose, group, option, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = compose(f"{group}={option}")
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
        assert OmegaConf.to_container(cfg) != OmegaConf.to_container(compose())


def test_the_slurm_launcher_config_sizes_jobs_from_the_trainer(compose):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = compose("hydra/launcher=slurm", "trainer=ddp_cpu", "trainer.devices=4", hydra=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.gpus_per_node == 4 and launcher.tasks_per_node == 4
    assert launcher.nodes == cfg.trainer.num_nodes


def test_the_default_is_a_config_and_overrides_keep_it(compose):
    for overrides in ([], ["logger=none"], ["seed=1"], ["metric=layerwise"]):
        cfg = compose(*overrides)
        assert cfg.task.name == "quickstart" and cfg.model.name == "quickstart", overrides
    headline = compose("model=i3d", "dataset=ssv2", "metric=unitwise")
    assert headline.task.name == "probe" and headline.model.name == "i3d"


def test_weight_metrics_select_task_weights_in_the_composed_config(compose):
    for metric in ("asdt", "selfconv"):
        assert compose(f"metric={metric}", "model=i3d").task.name == "weights"
    # the command line still decides when it names the task
    assert compose("metric=asdt", "model=i3d", "task=probe").task.name == "probe"


@pytest.mark.parametrize(
    "model,size,short_side,frames",
    [
        ("i3d", 224, 256, 8),
        ("r3d_18", 112, 128, 16),
        ("x3d_s", 160, 182, 13),
        ("i3d_tiny", 64, None, 16),
    ],
)
def test_clip_geometry_follows_the_model(compose, model, size, short_side, frames):
    cfg = compose(f"model={model}", "dataset=kinetics")
    data = OmegaConf.to_container(cfg.dataset, resolve=True)
    assert (data["size"], data["short_side"], data["num_frames"]) == (size, short_side, frames)
    assert data["sampling_rate"] == cfg.model.input.sampling_rate
    own = OmegaConf.to_container(
        compose(f"model={model}", "dataset=kinetics", "dataset.short_side=300").dataset,
        resolve=True,
    )
    assert own["short_side"] == 300 and own["size"] == size  # set on its own, it applies


def test_a_dataset_value_that_contradicts_the_model_names_both_keys(compose):
    from stbias.models.inputs import InputSpec
    from stbias.tasks.dataset_setup import build_dataset

    cfg = compose("model=i3d", "dataset=kinetics", "dataset.size=112")
    spec = InputSpec.from_dict(OmegaConf.to_container(cfg.model.input, resolve=True))
    stbias_error(
        lambda: build_dataset(cfg.dataset, spec), "dataset.size=112 conflicts with model.input.size"
    )
    small = compose("model=i3d", "dataset=kinetics", "dataset.short_side=200")
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


# --- one convention, one clip selection, one group choosing the task, typed settings -----------

SHARED_ROOT_NODES = {"task", "probe", "train", "runs"}


@pytest.mark.parametrize("path", sorted((CONF / "task").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_task_yaml_follows_the_one_convention(path):
    """`# @package _global_`, its own settings in `task` (named after the file), defaults of
    shared nodes only."""
    text = path.read_text()
    assert text.startswith("# @package _global_\n"), path.name
    node = OmegaConf.load(path)
    assert node.task.name == path.stem
    assert set(node) - {"defaults"} <= SHARED_ROOT_NODES, set(node)


def test_the_clip_selection_is_one_node_with_each_task_s_defaults(compose):
    for metric in ("temporal_mask", "gradcam"):
        cfg = compose(f"metric={metric}", "model=i3d_tiny")
        assert cfg.task.name == metric and "num_clips" not in cfg.metric
        assert (cfg.probe.num_clips, cfg.probe.batch_size) == (64, 16)
        assert compose(f"metric={metric}", "probe.num_clips=6").probe.num_clips == 6
    assert compose("task=test", "model=i3d_tiny").probe.num_clips is None  # every clip
    train = compose("task=train", "model=i3d_tiny")
    assert train.probe.num_clips == 64 and "probe_clips" not in train.train.static_dropout
    assert compose("model=i3d_tiny").probe.num_clips == 256
    assert "test" not in compose("task=test", "model=i3d_tiny")  # task=test's own: task.*


def test_one_group_chooses_the_task_and_options_name_their_home(compose):
    assert compose().task.name == "quickstart"
    assert compose("model=i3d").task.name == "probe"
    assert compose("metric=selfconv", "model=i3d").task.name == "weights"
    # an experiment that names its task keeps it under the default model=quickstart
    assert compose("experiment=figures/center_bias_embedded").task.name == "center_bias"
    # keys of the home task's node can be set on the command line
    assert compose("task.train.clips=64").task.train.clips == 64


def run_cli(args, monkeypatch, capsys, tmp_path):
    """``stbias <args>`` in this process: exit code and the lines written to stderr."""
    import sys

    from stbias.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["stbias", *args, f"hydra.run.dir={tmp_path}"])
    with pytest.raises(SystemExit) as done:
        main()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return done.value.code, lines


@pytest.mark.parametrize(
    "args,named",
    [
        (["metric.iterations=abc"], "metric.iterations is not a setting; metric (metric=unitwise)"),
        (["metric=temporal_mask", "metric.iterations=abc"], "metric.iterations='abc' is not valid"),
        (["metric=gradcam", "metric.save_maps=maybe"], "metric.save_maps takes true or false"),
        (["probe.nmu_clips=3"], "probe.nmu_clips is not a setting; probe takes layers, num_clips"),
        (["+probe.nmu_clips=3"], "probe.nmu_clips is not a setting"),
        (["model=i3d_tiny", "+model.builder.depth=2"], "model.builder.depth is not a setting"),
        (["model=i3d_tiny", "model.builder.dropout=x"], "model.builder.dropout='x' is not valid"),
        (["model=i3d_tiny", "+dataset.colour=1"], "dataset.colour is not a setting; dataset ("),
        (["model=i3d_tiny", "trainer.max_epochs=ten"], "trainer.max_epochs='ten' is not valid"),
        (["model=i3d_tiny", "+trainer.max_epoch=1"], "trainer.max_epoch is not a setting"),
        (["task=train", "+train.optimizer.momentun=1"], "optimizer.momentun is not a setting"),
        (["metric=asdt", "model=i3d", "probe.num_clips=3"], "probe.num_clips is not read by"),
        (["task=test", "model=i3d_tiny", "probe.sampling=first"], "probe.sampling is not read by"),
        # a node the task does not compose: a number is a number, the task is named
        (["task=vis_study", "train.instance_segmentation.dice_weight=3"], "is not read by task="),
        (["task=train", "metric=asdt"], "metric=asdt runs in task=weights, not task=train"),
        (
            ["task=train", "model=i3d_tiny", "train.static_dropout.p=0.5", "probe.num_clips=null"],
            "probe.num_clips=None is not valid; StaticDropout",
        ),
        (["model=nosuch"], "Could not find 'model/nosuch'; available options in 'model'"),
    ],
)
def test_a_bad_command_line_is_one_line_and_exit_2_before_anything_runs(
    args, named, monkeypatch, capsys, tmp_path
):
    code, lines = run_cli(args, monkeypatch, capsys, tmp_path)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("stbias: error: ") and named in lines[0], lines[0]
    assert not (tmp_path / ".hydra").exists()  # Hydra never started the run


def test_flags_and_group_options_pass_and_printing_the_config_shows_the_home_task():
    from stbias.validation import check_arguments

    assert check_arguments(["debug=fast", "model=i3d_tiny"]) == ["debug=fast", "model=i3d_tiny"]
    assert check_arguments(["--cfg", "job", "metric=asdt"])[-1] == "task=weights"
    assert check_arguments(["-c", "job", "probe.nmu=1"]) == ["-c", "job", "probe.nmu=1"]
    assert check_arguments(["--help"]) == ["--help"]
    # the paths a figure passes to its experiment reach the task through interpolations
    figure = [
        "experiment=figures/byvshev_table1_test_embedded",
        "paths.runs.byvshev_table1_train_embedded=/runs",
    ]
    assert check_arguments(figure) == figure


def test_every_packaged_option_passes_the_typed_checks(compose):
    from stbias.settings import check

    for group in ("model", "dataset", "stylization", "trainer", "logger", "metric", "task"):
        for path in sorted((CONF / group).glob("*.yaml")):
            extra = ["model=i3d_tiny"] if group in ("dataset", "stylization", "trainer") else []
            check(compose(f"{group}={path.stem}", *extra))


def test_the_typed_checks_know_every_task_and_every_packaged_metric():
    from stbias.settings import READS, SCHEMAS

    assert set(SCHEMAS["task"]) == set(TASKS) == set(READS)
    assert {p.stem for p in (CONF / "metric").glob("*.yaml")} <= set(SCHEMAS["metric"])
