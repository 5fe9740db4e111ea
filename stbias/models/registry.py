"""Models by name: the shipped ``conf/model/<name>.yaml`` built into a module that knows itself.

``create("i3d_tiny")`` is what ``python run.py model=i3d_tiny`` builds: the YAML's ``builder``
instantiated, ``checkpoint`` loaded (:func:`build`, which the tasks call too). The module carries
what the YAML says about it as ``model.stbias``, a :class:`ModelInfo` (name, layer aliases,
channel counts, layout, input spec, the layers a probe and Grad-CAM take by default, weights), so
``Probe(model)`` and ``GradCAM(model, layer="res3")`` need nothing else. The YAML is package data:
no path a user gives reaches ``hydra.utils.instantiate``.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from stbias.config import CONF_DIR, option_node
from stbias.errors import StbiasError
from stbias.models.inputs import InputSpec
from stbias.models.weights import load_checkpoint

# model options that are not one network (model=quickstart names two, model=custom takes its
# constructor on the command line)
_NOT_ONE_MODEL = ("quickstart", "custom")
# top-level keys of a model YAML that create() may change besides the builder's and the input's
_TOP_KEYS = ("num_classes", "layout", "token_order")


@dataclass(frozen=True)
class ModelInfo:
    """What a model's YAML says about the network (``model.stbias`` of a created model).

    Attributes:
        name: the option name (``model=<name>``).
        layers: alias -> module path of every declared layer.
        channels: alias -> unit count (where the YAML declares it).
        spec: the :class:`~stbias.models.inputs.InputSpec` clips are packed with (None for a
            model config without an ``input`` node, e.g. one only its weights are read from).
        layout: how the layers' outputs are laid out (``cnn``, ``tokens``, ...).
        probe_layers: the aliases a probe reports by default (every layer when empty).
        gradcam_layer: the alias Grad-CAM explains by default (None: none chosen).
        weights: ``random``, ``pretrained:<source>`` or ``file:<path>``.
        weights_sha256: the checkpoint file's SHA-256 (None without one).
        config: the resolved model node the network was built from.
    """

    name: str
    layers: dict[str, str]
    channels: dict[str, int]
    spec: InputSpec | None
    layout: str = "cnn"
    probe_layers: tuple[str, ...] = ()
    gradcam_layer: str | None = None
    weights: str = "random"
    weights_sha256: str | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def default_probe_layers(self) -> dict[str, str]:
        """The layers a probe reports unless told: ``probe_layers``, else every declared one."""
        chosen = self.probe_layers or tuple(self.layers)
        return {alias: self.layers[alias] for alias in chosen}


def model_info(model: nn.Module) -> ModelInfo | None:
    """The :class:`ModelInfo` a model built by :func:`create` carries, else None."""
    info = getattr(model, "stbias", None)
    return info if isinstance(info, ModelInfo) else None


def list_models(pattern: str = "*") -> list[str]:
    """The names :func:`create` builds whose name matches ``pattern`` (fnmatch, as timm's)."""
    if not isinstance(pattern, str):
        raise TypeError(f"pattern takes a str; got {type(pattern).__name__}")
    names = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
    return [n for n in names if n not in _NOT_ONE_MODEL and fnmatch.fnmatch(n, pattern)]


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _set_overrides(node: Any, name: str, overrides: Mapping[str, Any]) -> None:
    builder = [k for k in node.builder if k != "_target_"]
    spec_keys = [f.name for f in fields(InputSpec)]
    top = [k for k in _TOP_KEYS if k in node]
    for key, value in overrides.items():
        if key in top:
            node[key] = value
        elif key in builder:
            node.builder[key] = value
        elif key in spec_keys:
            node.input[key] = value
        else:
            valid = sorted({*top, *builder, *spec_keys})
            raise StbiasError(
                f"unknown setting {key!r} of model {name}; valid: {', '.join(valid)} "
                "(pretrained= and checkpoint= are arguments of their own)"
            )


def model_node(
    name: str, *, pretrained: bool = False, checkpoint: str | None = None, **overrides: Any
) -> Any:
    """The model config node :func:`create` builds from (the shipped YAML, changed as asked)."""
    if not isinstance(name, str) or name not in list_models():
        shown = name if isinstance(name, str) else type(name).__name__
        raise StbiasError(f"unknown model {shown!r}; valid: {', '.join(list_models())}")
    node = option_node("model", name)
    OmegaConf.set_struct(node, False)
    node.pretrained = bool(pretrained)
    node.checkpoint = None if checkpoint is None else os.fspath(checkpoint)
    _set_overrides(node, name, overrides)
    if pretrained and not node.get("published_weights"):
        published = [n for n in list_models() if option_node("model", n).get("published_weights")]
        raise StbiasError(
            f"model {name} has no published weights (pretrained=True); models that have them: "
            f"{', '.join(published)}"
        )
    if node.checkpoint and not os.path.isfile(os.path.expanduser(str(node.checkpoint))):
        raise StbiasError(
            f"checkpoint={node.checkpoint} is not a file; give a local weights file "
            "(.pyth, .ckpt, .pt) or checkpoint=None"
        )
    return node


def build(model_cfg: Any, new_head: int | None = None) -> nn.Module:
    """Instantiate ``model_cfg.builder`` and load ``model_cfg.checkpoint`` when one is given.

    Args:
        model_cfg: a ``model`` config node (a shipped YAML, possibly changed).
        new_head: training on ``new_head`` classes: a checkpoint whose classifier has another
            class count loads all but the classifier, which keeps its fresh initialisation.
    """
    model = instantiate(model_cfg.builder)
    checkpoint = model_cfg.get("checkpoint")
    if checkpoint:
        load_checkpoint(model, str(checkpoint), new_head=new_head)
    return model


def describe(model_cfg: Any) -> ModelInfo:
    """The :class:`ModelInfo` of a model config node."""
    plain = OmegaConf.to_container(model_cfg, resolve=True)
    checkpoint = plain.get("checkpoint")
    if checkpoint:
        path = os.path.abspath(os.path.expanduser(str(checkpoint)))
        weights, sha = f"file:{path}", _sha256(path)
    elif plain.get("pretrained"):
        weights, sha = f"pretrained:{plain.get('published_weights')}", None
    else:
        weights, sha = "random", None
    layers = {str(k): str(v) for k, v in (plain.get("layers") or {}).items()}
    return ModelInfo(
        name=str(plain.get("name")),
        layers=layers,
        channels={str(k): int(v) for k, v in (plain.get("channels") or {}).items()},
        spec=InputSpec.from_dict(plain["input"]) if plain.get("input") else None,
        layout=str(plain.get("layout") or "cnn"),
        probe_layers=tuple(str(a) for a in plain.get("probe_layers") or ()),
        gradcam_layer=plain.get("gradcam_layer"),
        weights=weights,
        weights_sha256=sha,
        config=copy.deepcopy(plain),
    )


def attach(model: nn.Module, model_cfg: Any) -> nn.Module:
    """``model`` with its :class:`ModelInfo` as ``model.stbias``; returns it."""
    model.stbias = describe(model_cfg)
    return model


def create(
    name: str, *, pretrained: bool = False, checkpoint: str | os.PathLike | None = None, **overrides
) -> nn.Module:
    """The network ``python run.py model=<name>`` builds, carrying its :class:`ModelInfo`.

    Args:
        name: a model option (:func:`list_models`).
        pretrained: load the published weights (models whose YAML names ``published_weights``).
        checkpoint: a local weights file (``.pyth``, Lightning ``.ckpt``, state dict).
        overrides: keys of the YAML's ``builder`` (``num_classes=10``), of its ``input``
            (``frames=8``, ``size=32``) or ``layout``; any other key is refused, naming the valid.
    """
    node = model_node(name, pretrained=pretrained, checkpoint=checkpoint, **overrides)
    return attach(build(node), node)
