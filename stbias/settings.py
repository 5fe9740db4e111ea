"""Typed settings: every key of the composed config checked right after composition.

A node with a ``_target_`` (a dataset, a model's ``builder``, the ``trainer``, the ``logger``,
the ``stylization`` and its ``stylizer``, the optimizer, ...) takes the arguments of that callable,
with the types of its annotations (``inspect.signature``, ``typing.get_type_hints``); a callable
that passes ``**kwargs`` on to an stbias class (``ssv2(root, split, **clip)`` builds a
``VideoClipDataset``) takes that class's arguments too. The other nodes are the dataclasses
below: the root, ``probe`` (the clip selection every task shares), ``train``, the model's keys
beside its builder, and one dataclass per task (``task.*``) and per measure (``metric.*``).
A new model, dataset or stylizer is checked through its own signature, with no entry here; a
new task or measure without a ``_target_`` may :func:`register` its dataclass.

:func:`check` raises one :class:`StbiasError` line naming the first key that is not a setting
(and what the node takes) or whose value has the wrong type (and what it takes);
:func:`check_command_line` also refuses a key set on the command line that the chosen task does
not read. Value ranges stay in :mod:`stbias.validation`.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import importlib
import inspect
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from omegaconf import DictConfig, ListConfig, OmegaConf

from stbias.errors import StbiasError


class Target:
    """A node instantiated by Hydra: ``_target_`` and the callable's arguments."""


# Hydra's own keys of a node with a ``_target_``
HYDRA_KEYS = ("_target_", "_partial_", "_convert_", "_recursive_", "_args_")


# --- the nodes that are not built from a _target_ ----------------------------------------------


@dataclass
class Probe:
    """``probe.*``: the layers a probe reports and the clip selection every task shares (how
    many clips, which, how many at a time): the probe, the explanations, ``task=test`` and
    StaticDropout read ``num_clips``, ``sampling``, ``batch_size``, ``num_workers``."""

    layers: list[str] | str | None = None
    num_clips: int | None = 256
    sampling: Literal["stratified", "random", "first"] = "stratified"
    batch_size: int = 8
    num_workers: int | Literal["auto"] = 0
    stylize_on: Literal["auto", "device", "loader"] = "auto"
    bootstrap: int = 0
    include_cls: bool = False
    cache_dir: str | None = "outputs/cache"
    save_every: int = 20
    checkpoints: list[str] | str | None = None


@dataclass
class StaticDropout:
    p: float = 0.0
    layer: str | None = None
    units: Literal["static", "static_joint"] = "static"
    refresh_every: int = 1
    lam: float = 0.5
    mode: Literal["static", "all", "random"] = "static"
    init: Literal["trained", "start"] = "trained"


@dataclass
class Segmentation:
    bce_weight: float = 1.0
    iou_weight: float = 1.0
    threshold: float = 0.5


@dataclass
class InstanceSegmentation:
    class_weight: float = 1.0
    bce_weight: float = 1.0
    dice_weight: float = 1.0
    box_weight: float = 1.0
    no_object_weight: float = 0.1
    threshold: float = 0.5


@dataclass
class Train:
    batch_size: int = 16
    num_workers: int = 0
    label_key: str = "label"
    num_classes: int | None = None
    shuffle_frames: bool = False
    train_clips: int | None = None
    val_split: str | None = "val"
    val_clips: int | None = None
    resume: str | None = None
    segmentation: Segmentation = field(default_factory=Segmentation)
    instance_segmentation: InstanceSegmentation = field(default_factory=InstanceSegmentation)
    output_dir: str | None = None
    checkpoint_every: int | str | None = None
    static_dropout: StaticDropout = field(default_factory=StaticDropout)
    optimizer: Target | None = None
    scheduler: Target | None = None


@dataclass
class Input:
    frames: int = 16
    sampling_rate: int = 1
    size: int = 224
    short_side: int | None = None
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    channels: int = 3
    pathways: int = 1
    alpha: int | None = None
    flow: bool = False
    flow_mean: list[float] = field(default_factory=list)
    flow_std: list[float] = field(default_factory=list)


@dataclass
class Model:
    """The model node beside its ``builder``: weights, layer aliases, input spec."""

    name: str = ""
    task: str | None = None  # the task the option runs in when the command line names none
    builder: Target | None = None
    pretrained: bool = False
    published_weights: Any = None
    backbone_weights: Any = None
    checkpoint: str | None = None
    weights: Any = None  # the released weight files this option loads: name, url, what each is
    num_classes: int | None = None
    layout: str = "cnn"
    objective: Literal["classification", "segmentation", "instance_segmentation"] = "classification"
    layers: dict[str, str] | None = None
    channels: dict[str, int] | None = None
    probe_layers: list[str] | None = None
    gradcam_layer: str | None = None
    token_order: Literal["thw", "hwt"] | None = None
    input: Input = field(default_factory=Input)
    reduced: dict[str, Any] | None = None
    requires: Any = None
    models: list[str] | None = None  # model=quickstart: the models it trains and compares


@dataclass
class DatasetLoading:
    """Keys of a dataset node beside its builder's arguments: DataLoader settings."""

    name: str | None = None
    num_workers: int | Literal["auto"] = 0
    prefetch_factor: int | None = 2
    pin_memory: bool | Literal["auto"] = "auto"


@dataclass
class StylizationName:
    name: str | None = None


# --- measures (metric.*) -----------------------------------------------------------------------


@dataclass
class PairScores:
    name: str = "unitwise"
    task: str | None = None
    lam: float = 0.5
    estimator: Literal["pooled", "mean_corr"] = "pooled"


@dataclass
class WeightTemporality:
    name: str = "asdt"
    task: str | None = "weights"
    delta: float = 0.0
    rule: Literal["spec", "literal"] = "spec"
    compare: list[str | None] | None = None
    labels: list[str] | None = None


@dataclass
class TemporalMaskSettings:
    name: str = "temporal_mask"
    task: str | None = "temporal_mask"
    perturbation: Literal["freeze", "reverse"] = "freeze"
    iterations: int = 300
    lr: float = 0.2
    l1: float = 0.01
    tv: float = 0.02
    beta: float = 3.0
    init: Literal["spec", "reference"] = "spec"
    init_fraction: float = 0.9
    init_logit: float = 5.0
    tv_weights: Literal["spec", "reference"] = "spec"
    reverse_blend: Literal["spec", "reference"] = "spec"
    reverse_threshold: float = 0.1
    length_threshold: float = 0.5
    min_drop: float = 0.001
    target_class: Literal["predicted", "label"] = "predicted"
    label_key: str = "label"
    figures: int = 4


@dataclass
class GradCamSettings:
    name: str = "gradcam"
    task: str | None = "gradcam"
    weights: Literal["time", "time_mean"] = "time"
    target: Literal["logit", "softmax"] = "logit"
    time: Literal["interpolate", "repeat"] = "interpolate"
    normalize: Literal["frame", "clip", "none"] = "frame"
    eps: float = 1e-6
    grid: list[int] | None = None
    token_order: Literal["thw", "hwt"] | None = None
    target_class: Literal["predicted", "label"] = "predicted"
    label_key: str = "label"
    save_maps: bool = True
    figures: int = 4
    fps: float = 4
    blobs: dict[str, Any] | None = None


@dataclass
class ExplanationSettings:
    """A measure that names an explanation method (``method._target_``, task=explain); the
    method's own keys are checked against its signature."""

    name: str = ""
    task: str | None = "explain"
    method: Target | None = None
    target_class: Literal["predicted", "label"] = "predicted"
    label_key: str = "label"
    figures: int = 4


# --- tasks (task.*) ----------------------------------------------------------------------------


@dataclass
class NameOnly:
    name: str = ""


@dataclass
class TestTask:
    name: str = "test"
    split: str = "val"
    reverse: bool = False
    label_key: str = "label"
    predictions: bool = True
    output_dir: str | None = None


@dataclass
class CompareTask:
    name: str = "compare"
    layer: str | None = None
    labels: dict[str, str] | None = None


@dataclass
class CenterBiasTask:
    name: str = "center_bias"
    size: int = 64
    datasets: list[str] | None = None
    roots: dict[str, str] | None = None
    normalise: Literal["minmax", "max"] = "minmax"


@dataclass
class LayersTask:
    name: str = "layers"
    reduced: bool = False
    size: int | None = None
    frames: int | None = None
    suggest_depth: int = 3


@dataclass
class QuickstartTraining:
    num_places: int = 4
    num_motions: int = 4
    clips: int = 2048
    val_clips: int = 256
    max_epochs: int = 6
    batch_size: int = 16
    lr: float = 0.003


@dataclass
class QuickstartTask:
    name: str = "quickstart"
    cache_dir: str = "outputs/quickstart"
    train: QuickstartTraining = field(default_factory=QuickstartTraining)


@dataclass
class ManttariTraining:
    label_key: str = "label"
    num_classes: int | None = None
    clips: int = 10000
    val_clips: int = 1000
    max_epochs: int = 10
    batch_size: int = 16
    lr: float = 0.001


@dataclass
class ManttariTask:
    name: str = "manttari"
    cache_dir: str = "outputs/manttari"
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    checkpoints: dict[str, str | None] = field(default_factory=dict)
    input: dict[str, int] = field(default_factory=dict)
    train: ManttariTraining = field(default_factory=ManttariTraining)
    precise_bn_batches: int = 0
    eval_split: str = "test"
    eval_clips: int = 1000
    # any key of metric=temporal_mask / metric=gradcam, or of the clip selection (probe.*)
    temporal_mask: dict[str, Any] = field(default_factory=dict)
    gradcam: dict[str, Any] = field(default_factory=dict)


@dataclass
class VosTraining:
    clips: int = 2000
    val_clips: int = 200
    max_epochs: int = 4
    batch_size: int = 16
    num_workers: int = 0
    lr: float = 0.001


@dataclass
class VosCenterBias:
    size: int = 64
    clips: int | None = 1000
    normalise: Literal["minmax", "max"] = "minmax"


@dataclass
class VosStudyTask:
    name: str = "vos_study"
    cross: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    reference: str = "none"
    probe_dataset: str | None = None
    probe_split: str = "val"
    cache_dir: str = "outputs/vos_study"
    train: VosTraining = field(default_factory=VosTraining)
    bootstrap: int = 1000
    center_bias: VosCenterBias = field(default_factory=VosCenterBias)


@dataclass
class VosEvaluation:
    dataset: str = "moca"
    root: str | None = None
    split: str = "test"
    clips: int | None = None


@dataclass
class VosMocaTask(VosStudyTask):
    name: str = "vos_moca"
    evaluation: VosEvaluation = field(default_factory=VosEvaluation)


@dataclass
class VisStudyTask:
    name: str = "vis_study"
    parts: dict[str, str] = field(default_factory=dict)
    unit_layer: str | None = None
    train_on: str | None = None
    cache_dir: str = "outputs/vis_study"
    train: VosTraining = field(default_factory=VosTraining)


@dataclass
class StaticDropoutTask:
    name: str = "static_dropout"
    modes: list[Literal["none", "static", "all", "random"]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)


@dataclass
class ScenePlaces:
    arch: Literal["tiny", "resnet18", "resnet50", "alexnet", "densenet161"] = "tiny"
    weights: str | None = None
    categories: str | None = None
    num_classes: int = 365
    num_places: int = 18
    size: int = 32
    train_per_class: int = 64
    test_per_class: int = 16
    max_epochs: int = 6
    batch_size: int = 64
    lr: float = 0.003


@dataclass
class SceneProbeModel:
    """One entry of ``task.linear_probe.models`` (one row of Table A.4)."""

    label: str | None = None
    model: str | None = None
    checkpoint: str | None = None
    image_arch: str | None = None
    weights: str | None = None
    frames: int | None = None
    inflate: int | None = None
    layer: str | None = None
    pretraining: str | None = None
    fixed_weights: bool = True


@dataclass
class SceneFineTune:
    epochs: int = 3
    lr: float = 1e-4
    batch_size: int = 32


@dataclass
class SceneLinearProbe:
    places_root: str | None = None
    num_places: int = 18
    train_per_class: int = 32
    test_per_class: int = 16
    size: int | None = None
    batch_size: int = 32
    c: float = 1.0
    tol: float = 1e-8
    max_iter: int = 10000
    fine_tune: SceneFineTune = field(default_factory=SceneFineTune)
    models: list[SceneProbeModel] = field(default_factory=list)


@dataclass
class SceneBiasTask:
    name: str = "scene_bias"
    cache_dir: str = "outputs/scene_bias"
    split: str = "val"
    videos: int | None = 256
    batch_size: int = 16
    train: QuickstartTraining = field(default_factory=QuickstartTraining)
    places: ScenePlaces = field(default_factory=ScenePlaces)
    linear_probe: SceneLinearProbe = field(default_factory=SceneLinearProbe)


@dataclass
class Root:
    seed: int = 0
    verbose: bool = False
    layer: str | None = None  # the layer alias Grad-CAM explains (metric=gradcam)
    runs: list[str] | str | None = None  # the run directories task=compare reads
    task: Any = None
    probe: Probe = field(default_factory=Probe)
    train: Train = field(default_factory=Train)
    model: Any = None
    dataset: Any = None
    stylization: Any = None
    metric: Any = None
    trainer: Target | None = None
    logger: Target | None = None
    # the figure experiments' own keys (conf/experiment/figures, read by stbias.figures)
    figure: Any = None
    paths: Any = None
    evaluation: Any = None
    evaluations: Any = None
    trained_on: Any = None
    pfm_variants: Any = None
    training_dataset: Any = None
    splits: Any = None
    frames: Any = None


# the root keys of the figure experiments (conf/experiment/figures): stbias.figures sets them
# on the command line (paths.runs.<stage>=..., evaluation=...) and the nodes of the task read
# them through interpolations
FIGURE_KEYS = (
    "figure",
    "paths",
    "evaluation",
    "evaluations",
    "trained_on",
    "pfm_variants",
    "training_dataset",
    "splits",
    "frames",
)

# group -> option name (the node's `name`) -> its dataclass
SCHEMAS: dict[str, dict[str, type]] = {
    "task": {
        "probe": NameOnly,
        "train": NameOnly,
        "weights": NameOnly,
        "gradcam": NameOnly,
        "temporal_mask": NameOnly,
        "explain": NameOnly,
        "test": TestTask,
        "compare": CompareTask,
        "center_bias": CenterBiasTask,
        "layers": LayersTask,
        "quickstart": QuickstartTask,
        "manttari": ManttariTask,
        "vos_study": VosStudyTask,
        "vos_moca": VosMocaTask,
        "vis_study": VisStudyTask,
        "static_dropout": StaticDropoutTask,
        "scene_bias": SceneBiasTask,
    },
    "metric": {
        "unitwise": PairScores,
        "layerwise": PairScores,
        "asdt": WeightTemporality,
        "selfconv": WeightTemporality,
        "temporal_mask": TemporalMaskSettings,
        "gradcam": GradCamSettings,
    },
}


def register(group: str, name: str, schema: type) -> None:
    """Check the ``group`` node whose ``name`` is ``name`` against the dataclass ``schema``
    (a task or a measure added outside stbias)."""
    SCHEMAS.setdefault(group, {})[name] = schema


# what each task reads, for keys set on the command line: root keys, nodes or dotted keys;
# None: everything (the studies compose their sub-runs from the whole config)
_RUN = ("seed", "verbose", "task", "trainer", "logger")
_DATA = ("model", "dataset")  # the dataset's geometry follows model.input
_CLIPS = ("probe.num_clips", "probe.sampling", "probe.batch_size", "probe.num_workers")
READS: dict[str, tuple[str, ...] | None] = {
    "probe": (*_RUN, *_DATA, "probe", "metric", "stylization"),
    "train": (*_RUN, *_DATA, "train", "stylization", *_CLIPS, "probe.include_cls"),
    "test": (*_RUN, *_DATA, "probe.num_clips", "probe.batch_size", "probe.num_workers"),
    "weights": (*_RUN, "model", "metric"),
    "gradcam": (*_RUN, *_DATA, "metric", "layer", *_CLIPS),
    "temporal_mask": (*_RUN, *_DATA, "metric", *_CLIPS),
    "explain": (*_RUN, *_DATA, "metric", "layer", *_CLIPS),
    "compare": ("verbose", "task", "logger", "runs"),
    "center_bias": (*_RUN, *_DATA, "probe.num_clips"),
    "layers": ("seed", "verbose", "task", "model"),
    "quickstart": None,
    "manttari": None,
    "vos_study": None,
    "vos_moca": None,
    "vis_study": None,
    "static_dropout": None,
    "scene_bias": None,
}


# --- types -------------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _accepts(value: Any, ann: Any) -> bool:
    """Whether ``value`` (plain: numbers, strings, lists, dicts) fits the annotation ``ann``;
    a type this cannot judge (a class, a callable) accepts anything."""
    if ann is Any or ann is inspect.Parameter.empty or ann is object:
        return True
    if ann is Target:
        return value is None or isinstance(value, dict)
    if isinstance(ann, type) and dataclasses.is_dataclass(ann):
        return isinstance(value, dict)
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin in (Union, types.UnionType):
        return any(_accepts(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args) or (
            isinstance(value, float) and any(value == a for a in args if _is_int(a))
        )
    if ann is type(None) or ann is None:
        return value is None
    if ann is bool:
        return isinstance(value, bool)
    if ann is int:
        return _is_int(value)
    if ann is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if ann is str:
        return isinstance(value, str)
    sequences = (list, tuple, set, collections.abc.Sequence, collections.abc.Iterable)
    if ann in sequences or origin in sequences:
        if not isinstance(value, list):
            return False
        item = args[0] if args and origin is not tuple else Any
        return all(_accepts(v, item) for v in value)
    if ann in (dict, collections.abc.Mapping) or origin in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            return False
        item = args[1] if len(args) == 2 else Any
        return all(_accepts(v, item) for v in value.values())
    return True


def describe(ann: Any) -> str:
    """What an annotation takes, in words: ``an integer or null``, ``one of freeze, reverse``."""
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin in (Union, types.UnionType):
        words = [describe(a) for a in args if a is not type(None)]
        if type(None) in args:
            words.append("null")
        return " or ".join(dict.fromkeys(words))
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if isinstance(ann, type) and dataclasses.is_dataclass(ann) or ann is Target:
        return "a mapping {key: value}"
    simple = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if ann in simple:
        return simple[ann]
    if ann is type(None):
        return "null"
    if origin in (list, tuple, collections.abc.Sequence, collections.abc.Iterable):
        return f"a list ([...] of {describe(args[0])})" if args else "a list [...]"
    if origin in (dict, collections.abc.Mapping) or ann is dict:
        return "a mapping {key: value}"
    return getattr(ann, "__name__", str(ann))


# --- the signature of a _target_ ---------------------------------------------------------------


def _callable(target: str) -> Any:
    module, _, name = target.rpartition(".")
    try:
        obj = importlib.import_module(module)
        return getattr(obj, name)
    except (ImportError, AttributeError):
        # a nested attribute (pkg.Class.method) or a missing optional library: not judged here
        try:
            parent = _callable(module) if module else None
        except Exception:  # noqa: BLE001 - any import failure means: cannot judge
            return None
        return getattr(parent, name, None)


def _hints(func: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(func.__init__ if inspect.isclass(func) else func)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve is not judged
        return {}


# a node's key -> its annotation; OPEN among them: any other key goes too (``**kwargs``)
OPEN = "**"


def target_fields(target: str) -> dict[str, Any] | None:
    """Argument name -> annotation of the callable ``target``, with :data:`OPEN` when it takes
    ``**kwargs`` it does not pass on to an stbias class; None when it cannot be imported here."""
    func = _callable(target)
    if func is None:
        return None
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return None
    hints = _hints(func)
    fields = {
        n: hints.get(n, p.annotation)
        for n, p in params.items()
        if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        forwarded = hints.get("return")
        more = None
        if inspect.isclass(forwarded) and forwarded.__module__.startswith("stbias."):
            more = target_fields(f"{forwarded.__module__}.{forwarded.__qualname__}")
        fields.update({k: v for k, v in (more or {OPEN: Any}).items() if k not in fields})
    return fields


# --- walking the config ------------------------------------------------------------------------


def _value(node: DictConfig, key: str) -> tuple[bool, Any]:
    """``(judged, value)``: a value that is ``???`` or does not resolve is not judged (the task
    reports it in its own words)."""
    if OmegaConf.is_missing(node, key):
        return False, None
    try:
        value = node[key]
        if isinstance(value, (DictConfig, ListConfig)):
            return True, OmegaConf.to_container(value, resolve=True)
        return True, value
    except Exception:  # noqa: BLE001 - omegaconf raises several interpolation errors
        return False, None


def _schema_fields(schema: type) -> dict[str, Any]:
    return typing.get_type_hints(schema)


def _node_fields(group: str, node: Any, path: str) -> tuple[dict[str, Any] | None, str]:
    """Key -> annotation of the node at ``path`` (None: not judged) and how to name the node."""
    if group == "model":
        return _schema_fields(Model), path
    if group in SCHEMAS:
        name = node.get("name") if isinstance(node, dict) else None
        schema = SCHEMAS[group].get(str(name))
        if schema is None and group == "metric" and isinstance(node, dict) and "method" in node:
            schema = ExplanationSettings
        if schema is not None:
            return _schema_fields(schema), f"{path} ({group}={name})"
    if isinstance(node, dict) and node.get("_target_"):
        fields = target_fields(str(node["_target_"]))
        if fields is None:
            return None, path
        extra = {"dataset": DatasetLoading, "stylization": StylizationName}.get(group)
        if extra is not None:
            fields = {**_schema_fields(extra), **fields}
        return {**{k: Any for k in HYDRA_KEYS}, **fields}, f"{path} ({node['_target_']})"
    if isinstance(node, dict) and "_target_" in node:  # `_target_: null` (logger=none)
        return {"_target_": type(None)}, path
    return None, path


def _dataclass_items(ann: Any) -> Any:
    """The dataclass of ``list[<dataclass>]`` (None for any other annotation)."""
    args = typing.get_args(ann)
    if typing.get_origin(ann) is list and args and dataclasses.is_dataclass(args[0]):
        return args[0]
    return None


def _check_value(key: str, value: Any, ann: Any) -> None:
    if not _accepts(value, ann):
        raise StbiasError(f"{key}={value!r} is not valid; {key} takes {describe(ann)}")
    if (
        ann is Target
        or typing.get_origin(ann) in (Union, types.UnionType)
        and Target in (typing.get_args(ann))
    ):
        if isinstance(value, dict):
            _check_node(key, value, _node_fields("", value, key))
    elif isinstance(ann, type) and dataclasses.is_dataclass(ann):
        _check_node(key, value, (_schema_fields(ann), key))
    elif _dataclass_items(ann) is not None and isinstance(value, list):
        for index, item in enumerate(value):  # a list of nodes of one schema: each checked
            name = f"{key}[{index}]"
            _check_node(name, item, (_schema_fields(_dataclass_items(ann)), name))
    elif isinstance(value, dict) and value.get("_target_"):
        _check_node(key, value, _node_fields("", value, key))


def _check_node(path: str, node: dict, fields: tuple[dict | None, str]) -> None:
    known, name = fields
    if known is None:
        return
    for key, value in node.items():
        full = f"{path}.{key}"
        if key not in known and OPEN in known:
            continue
        if key not in known:
            takes = ", ".join(k for k in known if k not in HYDRA_KEYS)
            raise StbiasError(f"{full} is not a setting; {name} takes {takes}")
        if isinstance(value, str) and ("${" in value or value == "???"):
            continue  # not resolved here, or a required value left unset: the task says so
        _check_value(full, value, known[key])


def _plain(cfg: Any) -> dict:
    """The config as plain containers; a value that does not resolve stays unresolved (and
    is skipped), a ``???`` stays ``???``."""
    out = {}
    for key in cfg:
        judged, value = _value(cfg, key)
        if judged:
            out[key] = value
        elif OmegaConf.is_missing(cfg, key):
            continue
        else:
            node = cfg._get_node(key)
            if isinstance(node, DictConfig):
                out[key] = _plain(node)
    return out


def check(cfg: Any) -> None:
    """Raise a StbiasError for the first key of ``cfg`` that is not a setting or whose value
    has the wrong type (nodes in the order of the config, keys in their order)."""
    plain = _plain(cfg) if OmegaConf.is_config(cfg) else dict(cfg)
    root = _schema_fields(Root)
    # in the order of Root's fields: the model before the dataset that follows its input spec
    order = {k: i for i, k in enumerate(root)}
    for key, value in sorted(plain.items(), key=lambda kv: order.get(kv[0], -1)):
        if key == "hydra":
            continue
        if key not in root:
            takes = ", ".join(root)
            raise StbiasError(f"{key} is not a setting; the root config takes {takes}")
        if root[key] is Any and key in ("task", "model", "dataset", "stylization", "metric"):
            if not isinstance(value, dict):
                raise StbiasError(f"{key}={value!r} is not valid; {key} takes a mapping")
            _check_node(key, value, _node_fields(key, value, key))
        elif not (isinstance(value, str) and "${" in value):
            _check_value(key, value, root[key])


# --- the command line --------------------------------------------------------------------------


def override_key(override: str) -> str:
    """The dotted key of a command-line override (``+probe.num_clips=4`` -> ``probe.num_clips``)."""
    return override.lstrip("+~").split("=", 1)[0]


GROUPS = ("task", "model", "dataset", "stylization", "metric", "trainer", "logger", "experiment")


def check_command_line(cfg: Any, overrides: Sequence[str]) -> None:
    """Refuse a key set on the command line that the chosen task does not read, and a task
    named on the command line beside an option that runs in another one (``task=train
    metric=asdt``)."""
    task = str(cfg.task.get("name"))
    keys = [override_key(o) for o in overrides]
    chosen = {k: o.split("=", 1)[-1] for k, o in zip(keys, overrides, strict=True)}
    if "task" in chosen:
        for group in ("metric", "model"):
            if group not in chosen:
                continue
            home = cfg[group].get("task") if OmegaConf.is_dict(cfg[group]) else None
            if home and str(home) != task:
                raise StbiasError(
                    f"{group}={chosen[group]} runs in task={home}, not task={task}: leave task "
                    f"unset, or choose another {group}"
                )
    reads = READS.get(task)
    if reads is None:
        return
    root = _schema_fields(Root)
    for key in keys:
        if key.startswith("hydra") or "/" in key or "@" in key:
            continue  # Hydra's own settings, nested group choices (hydra/launcher=...)
        if key in GROUPS or "." not in key and key not in root:
            continue  # an option of a group (debug=fast, a plug-in's group), not a key
        if key.split(".")[0] in FIGURE_KEYS:
            continue  # the figure experiments' keys reach the task through interpolations
        if any(key == r or key.startswith(r + ".") or r.startswith(key + ".") for r in reads):
            continue
        raise StbiasError(f"{key} is not read by task={task}; task={task} reads {', '.join(reads)}")
