"""Pretraining methods, one LightningModule each, and their registry.

Example:
    >>> from rspretrain.pretrain import methods
    >>> model = methods.create("moco", backbone="resnet18", in_chans=4)
"""

from __future__ import annotations

from typing import Any

from rspretrain.core.errors import ConfigError
from rspretrain.pretrain.methods.base import PretrainMethod
from rspretrain.pretrain.methods.cmid import CMID
from rspretrain.pretrain.methods.geokr import GeoKR
from rspretrain.pretrain.methods.gersp import GeRSP
from rspretrain.pretrain.methods.moco import MoCoV2
from rspretrain.pretrain.methods.supervised import Supervised

#: name -> LightningModule class; every CLI/config ``method:`` value resolves here.
METHODS: dict[str, type[PretrainMethod]] = {
    "moco": MoCoV2, "gersp": GeRSP, "cmid": CMID, "geokr": GeoKR, "supervised": Supervised,
}


def get_method(name: str) -> type[PretrainMethod]:
    """The method class registered under ``name``."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}") from None


def create(name: str, **kwargs: Any) -> PretrainMethod:
    """Instantiate a registered method."""
    return get_method(name)(**kwargs)


__all__ = ["METHODS", "CMID", "GeRSP", "GeoKR", "MoCoV2", "PretrainMethod", "Supervised", "create", "get_method"]
