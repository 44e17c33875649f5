"""Config schema checks shared by every command: typed values, dataclass sections, dotted overrides.

A config value is checked against its annotation (:func:`coerce`), a section against its dataclass
(:func:`build_dataclass`) and a ``model:`` section against a constructor's signature
(:func:`constructor_parameters`); an unknown key or a value of the wrong type is a
:class:`~rspretrain.core.errors.ConfigError` naming the key. Command-line overrides are
``--section.key value`` pairs whose values are parsed as YAML (:func:`parse_overrides`).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import types
import typing
from typing import Any, Union

import yaml

from rspretrain.core.errors import ConfigError


# -- type checking -------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against ``annotation`` (int/float/str/bool, Optional, unions, sequences, dicts).

    Ints are accepted where floats are expected; sequences become tuples/lists as annotated.
    Raises ConfigError naming ``key`` otherwise.
    """
    if annotation is Any or annotation is inspect.Parameter.empty:
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except ConfigError as err:
                errors.append(err)
        raise ConfigError(f"{key}: expected {_type_name(annotation)}, got {value!r} ({type(value).__name__})")
    if origin in (list, tuple, typing.Sequence, collections.abc.Sequence):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r} ({type(value).__name__})")
        inner = args[0] if args else Any
        items = [coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r} ({type(value).__name__})")
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif isinstance(annotation, type) and isinstance(value, annotation):
        return value
    raise ConfigError(f"{key}: expected {_type_name(annotation)}, got {value!r} ({type(value).__name__})")


def build_dataclass(cls: type, values: dict[str, Any], section: str):
    """Instantiate dataclass ``cls`` from ``values``, rejecting unknown keys and wrong types."""
    if not isinstance(values, dict):
        raise ConfigError(f"{section}: expected a mapping of keys, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"unknown config key '{section}.{key}'; valid keys: {', '.join(sorted(names))}")
        kwargs[key] = coerce(value, hints[key], f"{section}.{key}")
    return cls(**kwargs)


def constructor_parameters(method_cls: type) -> dict[str, Any]:
    """Constructor parameters (name -> annotation) of a class and its bases (``**kwargs`` chains followed)."""
    params: dict[str, Any] = {}
    for klass in reversed(method_cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        try:
            hints = typing.get_type_hints(init)
        except Exception:  # noqa: BLE001 - classes outside our package (Lightning's)
            continue
        for name, param in inspect.signature(init).parameters.items():
            if name == "self" or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                continue
            params[name] = hints.get(name, Any)
    return params


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """``["--optim.lr", "0.1", "--seed=3"]`` -> ``{"optim.lr": 0.1, "seed": 3}``."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}; overrides look like --section.key value")
        key = arg[2:]
        if "=" in key:
            key, raw = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise ConfigError(f"override --{key} has no value")
            raw = args[i + 1]
            i += 2
        try:
            out[key] = yaml.safe_load(raw)
        except yaml.YAMLError:
            out[key] = raw
    return out


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config key '{dotted}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value
