"""Pretraining methods, one LightningModule each, and their registry.

Example:
    >>> from rspretrain import methods
    >>> model = methods.create("moco", backbone="resnet18", in_chans=4)
"""

from __future__ import annotations

from typing import Any

from rspretrain.errors import ConfigError
from rspretrain.methods.base import PretrainMethod
from rspretrain.methods.gersp import GeRSP
from rspretrain.methods.moco import MoCoV2

#: name -> LightningModule class; every CLI/config ``method:`` value resolves here.
METHODS: dict[str, type[PretrainMethod]] = {"moco": MoCoV2, "gersp": GeRSP}


def get_method(name: str) -> type[PretrainMethod]:
    """The method class registered under ``name``."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}") from None


def create(name: str, **kwargs: Any) -> PretrainMethod:
    """Instantiate a registered method."""
    return get_method(name)(**kwargs)


__all__ = ["METHODS", "GeRSP", "MoCoV2", "PretrainMethod", "create", "get_method"]
