"""Pretraining methods, one LightningModule each, and their one registry.

A method is one file in this package whose class is decorated with :func:`register_method`; every module here is
imported when the package is, so a new file registers itself, and the CLI (``pretrain METHOD``), the run config
(``method:``), the benchmark (``--runs NAME``) and the registry contract test (``tests/pretrain/methods/
test_registry_contract.py``) all find it with no other file touched.

Example:
    >>> from rspretrain.pretrain import methods
    >>> model = methods.create("moco", backbone="resnet18", in_chans=4)
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from rspretrain.core.errors import ConfigError
from rspretrain.pretrain.methods.base import PretrainMethod
from rspretrain.pretrain.methods.registry import METHODS, register_method

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
# The method classes by class name (methods.MoCoV2, methods.BYOL, ...), as the registry holds them.
globals().update({cls.__name__: cls for cls in METHODS.values()})


def get_method(name: str) -> type[PretrainMethod]:
    """The method class registered under ``name``, or a user's own :class:`PretrainMethod` subclass by its import
    path (``mypackage.methods.MyMethod``: one file of one's own, no registration needed)."""
    if name in METHODS:
        return METHODS[name]
    if "." in name:
        from rspretrain.core.config import import_class

        return import_class(name, "method", PretrainMethod)
    raise ConfigError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))} or path.to.YourMethod")


def create(name: str, **kwargs: Any) -> PretrainMethod:
    """Instantiate a registered method."""
    return get_method(name)(**kwargs)


def default_configs() -> dict[str, str]:
    """Method name -> the shipped config a bare method name runs with (benchmark ``--runs NAME``)."""
    return {name: cls.default_config for name, cls in METHODS.items() if cls.default_config}


__all__ = ["METHODS", "PretrainMethod", "create", "default_configs", "get_method", "register_method",
           *sorted(cls.__name__ for cls in METHODS.values())]
