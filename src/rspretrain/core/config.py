"""Config schema checks shared by every command: typed values, dataclass sections, dotted overrides.

Command lines and YAML files are parsed by jsonargparse, the parser under LightningCLI (composing ``--config``
files, ``--print_config``, ``class_path`` objects; :func:`parse_arguments`). A config value is checked against its
annotation (:func:`coerce`), a section against its dataclass (:func:`build_dataclass`) and a ``model:`` section
against a constructor's signature (:func:`constructor_parameters`); an unknown key or a value of the wrong type is a
:class:`~rspretrain.core.errors.ConfigError` naming the key, one line. Command-line overrides are ``--section.key
value`` pairs whose values jsonargparse parses as YAML (:func:`override_arguments` writes a dict of them as such).
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


#: Mappings inside a config section that are one value, not a further section.
KEPT_WHOLE = ("dataset_options", "storage_options", "lightning", "backbone_kwargs")


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 1}}`` -> ``{"optim.lr": 1}``: a nested config as dotted keys (the mappings of
    :data:`KEPT_WHOLE` stay one value)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and key not in KEPT_WHOLE:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


# -- command-line / config-file parsing (jsonargparse) --------------------------------------------
def parse_arguments(parser: Any, argv: list[str]) -> dict[str, Any]:
    """Parse ``argv`` with a ``jsonargparse.ArgumentParser`` built with ``exit_on_error=False``; returns the plain
    nested dict. jsonargparse's errors (several lines, e.g. every member of a Union) become one
    :class:`ConfigError` line that keeps the key it names."""
    import argparse

    try:
        return parser.parse_args(argv).as_dict()
    except (argparse.ArgumentError, ValueError, TypeError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        if lines and lines[0].startswith("unrecognized arguments:"):
            raise ConfigError(f"unknown config key(s): {lines[0].split(':', 1)[1].strip()}") from None
        restricted = _restriction_message(parser, lines)
        if restricted:
            raise ConfigError(restricted) from None
        # "Parser key "x": <problem>", the first concrete cause of a Union mismatch, and the value given.
        head = lines[:1]
        causes = []
        for i, line in enumerate(lines):
            if line.startswith(("- Problem", "- Expected")):
                # A class_path problem names its cause on the next line.
                detail = lines[i + 1] if line.startswith("- Problem") and i + 1 < len(lines) else ""
                causes.append(f"{line.lstrip('- ')} {detail}".strip())
        given = [line for line in lines if line.startswith("Given value:")]
        if len(lines) > 1 and not lines[1].startswith("Does not validate"):
            head.append(lines[1])
        elif causes:
            head.append(causes[0] if causes[0].startswith("Problem") else
                        "expected one of: " + "; ".join(c.removeprefix("Expected a ") for c in causes))
        raise ConfigError(" ".join(head + given) or type(err).__name__) from None


#: jsonargparse's restricted-number rules, as the range messages of ``core.ranges`` say them.
_RULES = {"v>0": "> 0", "v>=0": ">= 0", "v>=0 and v<=1": "in [0, 1]", "v>0 and v<1": "in (0, 1)"}


def _restriction_message(parser: Any, lines: list[str]) -> str | None:
    """``--image-size must be > 0, got 0`` for jsonargparse's ``Parser key "image_size": Not of type PositiveInt: 0
    does not conform to restriction v>0`` (the option as the user typed it, the rule in words); None for others."""
    import re

    if len(lines) < 2 or not lines[0].startswith("Parser key"):
        return None
    key = re.match(r'Parser key "([^"]+)"', lines[0])
    rule = re.match(r"Not of type \w+: (.+) does not conform to restriction (.+)$", lines[1])
    if not key or not rule:
        return None
    name = key.group(1)
    # A command's own option (``image_size`` of ``evaluate``) as typed, ``--image-size``; config keys keep their name.
    flag = name if "." in name else "--" + name.replace("_", "-")
    value, restriction = rule.groups()
    return f"{flag} must be {_RULES.get(restriction, 'such that ' + restriction)}, got {value}"


def override_arguments(overrides: list[str] | dict[str, Any] | None) -> list[str]:
    """``--key value`` command-line tokens of overrides given as tokens or as a ``{"section.key": value}`` dict
    (values written as YAML, so ``None`` is ``null`` and a dict stays a mapping)."""
    if overrides is None:
        return []
    if isinstance(overrides, list):
        return list(overrides)
    tokens = []
    for key, value in overrides.items():
        text = value if isinstance(value, str) else yaml.safe_dump(_plain(value), default_flow_style=True).strip()
        tokens.append(f"--{key}={text.removesuffix(chr(10) + '...').strip()}")
    return tokens


def _plain(value: Any) -> Any:
    """``value`` with subclasses of the YAML scalars made plain (jsonargparse's ``PositiveInt(1)`` is an ``int``
    subclass that ``yaml.safe_dump`` cannot represent)."""
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def import_class(path: str, key: str, base: type | None = None) -> type:
    """The class at import path ``path`` (``package.module.Class``); a ConfigError naming ``key`` when it cannot be
    imported or is not a subclass of ``base``."""
    import importlib

    module_name, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(f"{key}: cannot import {path!r}") from None
    if base is not None and not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(f"{key}: {path} is not a {base.__name__}")
    return cls


def instantiate_class_spec(spec: dict[str, Any], key: str, base: type | None = None) -> Any:
    """An object from a ``{"class_path": "pkg.mod.Class", "init_args": {...}}`` spec (Lightning's convention for
    callbacks, loggers, a user's method or datamodule); a bad path or a class outside ``base`` is a ConfigError
    naming ``key`` (``lightning.pytorch.cli.instantiate_class`` would let an ImportError or TypeError through)."""
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise ConfigError(f"{key}: expected {{class_path: ..., init_args: {{...}}}}, got {spec!r}")
    cls = import_class(str(spec["class_path"]), key, base)
    try:
        return cls(**(spec.get("init_args") or {}))
    except TypeError as err:
        raise ConfigError(f"{key}: {spec['class_path']}: {err}") from None
