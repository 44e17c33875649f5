"""The registry of pretraining methods: ``method:`` name -> LightningModule class (timm's ``register_model``)."""

from __future__ import annotations

from typing import TypeVar

from rspretrain.core.errors import ConfigError

T = TypeVar("T", bound=type)

#: name -> method class; filled by :func:`register_method` as the method modules are imported.
METHODS: dict[str, type] = {}


def register_method(cls: T) -> T:
    """Class decorator: register a method under its ``method_name``; a name can be registered once."""
    name = cls.method_name
    if name in METHODS and METHODS[name] is not cls:
        raise ConfigError(f"method name {name!r} is registered twice ({METHODS[name].__qualname__}, {cls.__qualname__})")
    METHODS[name] = cls
    return cls
