"""Helpers the tasks share: turning config nodes into objects."""

from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate


def build_model(model_cfg: Any) -> torch.nn.Module:
    """Instantiate ``model_cfg.builder`` and load ``model_cfg.checkpoint`` when one is given."""
    model = instantiate(model_cfg.builder)
    checkpoint = model_cfg.get("checkpoint")
    if checkpoint:
        from stbias.models.weights import load_checkpoint

        load_checkpoint(model, str(checkpoint))
    return model
