"""Backbones (one module per family), the LensRegressor LightningModule and the registry.

Backbones are looked up by name (``model.net.name``) in :data:`BACKBONES`, never built
from an import path stored in a checkpoint, so loading a checkpoint cannot run code.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from torch import nn

from lenscnn.errors import UserError

#: name -> "module:Class" of every backbone family.
BACKBONES = {
    "fast": "lenscnn.models.fast:FastLensNet",
    "overfeat": "lenscnn.models.overfeat:OverFeat",
    "alexnet": "lenscnn.models.alexnet:AlexNetV2",
    "ensai": "lenscnn.models.ensai_net:EnsaiNet",
    "inception_v4": "lenscnn.models.inception:InceptionV4",
    "resnet": "lenscnn.models.resnet:ResNet",
    "timm": "lenscnn.models.timm_backbone:TimmBackbone",
}


def build_backbone(spec: Mapping[str, Any], num_outputs: int, image_size: tuple[int, int]) -> nn.Module:
    """Backbone from ``{"name": family, **kwargs}`` with ``num_outputs`` outputs."""
    spec = dict(spec)
    name = spec.pop("name", None)
    if name not in BACKBONES:
        raise UserError(f"model.net.name={name!r} is not a backbone; choose one of {sorted(BACKBONES)}")
    module, cls = BACKBONES[name].split(":")
    backbone = getattr(importlib.import_module(module), cls)
    try:
        return backbone(num_outputs=num_outputs, image_size=tuple(image_size), **spec)
    except TypeError as exc:
        raise UserError(f"model.net ({name}): {exc}") from None
