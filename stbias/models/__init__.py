"""Video models addressed by named layers: builders, input packing, layer taps, weights.

Model YAML schema (`conf/model/<name>.yaml`, package `model`):

* `name` — the option name (`model=<name>`).
* `builder` — a node with `_target_` (a function in `stbias.models.zoo` or any constructor) and
  its keyword arguments; `pretrained` and `num_classes` usually interpolate the keys below.
* `pretrained` — fetch the published weights with the library's own loader.
* `checkpoint` — null or a local weights file (`.pyth`, Lightning `.ckpt`, state dict).
* `num_classes` — classifier outputs.
* `layout` (optional, default `cnn`) — how layer outputs are laid out: `cnn`,
  `channels_last`, `tokens`, `tokens_cls` (see `stbias.models.taps`).
* `layers` — `alias: module.path`, a dotted module path with an optional `[i]` that picks element
  `i` of a tuple output (`blocks.3[0]`). Never integer positions alone.
* `channels` — `alias: int`, the channel count each alias yields (checked by the tests).
* `input` — the `InputSpec`: `frames`, `sampling_rate`, `size`, `mean`, `std`, `channels`,
  `pathways`, `alpha`.
* `reduced` (optional) — `{size, frames}` small enough for quick CPU checks
  (`task=layers task.reduced=true`, the tests); left out when the size is fixed.
* `probe_layers` (optional) — the aliases a probe reports unless `probe.layers` says;
  `gradcam_layer` (optional) — the alias Grad-CAM explains unless `layer=` says.
* `requires` (optional) — a module an optional extra provides (`transformers`); the tests skip
  the model when it is missing.

`create(name, **overrides)` builds one of them from Python (see `stbias.models.registry`);
`list_models(pattern)` lists the names.
"""

from stbias.models.inputs import InputSpec, pack_inputs, slow_indices, spec_shapes
from stbias.models.registry import ModelInfo, create, list_models, model_info
from stbias.models.taps import (
    LAYOUTS,
    LayerTap,
    capture,
    channels_of,
    get_module,
    parse_path,
    pool_features,
    pooled_features,
    select_layers,
    suggest_layers,
)
from stbias.models.tiny import c2d_tiny, i3d_tiny, slowfast_tiny
from stbias.models.weights import LoadReport, download_state, load_checkpoint

__all__ = [
    "c2d_tiny",
    "i3d_tiny",
    "slowfast_tiny",
    "LAYOUTS",
    "InputSpec",
    "ModelInfo",
    "LayerTap",
    "LoadReport",
    "capture",
    "channels_of",
    "create",
    "download_state",
    "get_module",
    "list_models",
    "load_checkpoint",
    "model_info",
    "pack_inputs",
    "parse_path",
    "pool_features",
    "pooled_features",
    "select_layers",
    "slow_indices",
    "spec_shapes",
    "suggest_layers",
]
