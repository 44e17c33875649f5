"""Run configuration: YAML files, dotted command-line overrides, strict validation.

A run config has the sections ``data``, ``model``, ``optim``, ``views`` and ``trainer`` plus
the top-level keys ``method`` and ``seed``. Every key can be overridden on the command line
as ``--section.key value`` (values are parsed as YAML, so ``--optim.lr 0.1`` is a float and
``--data.max_per_class null`` is None). An unknown key or a value of the wrong type is a
:class:`~rspretrain.errors.ConfigError` that names the key. The ``model`` section is checked
against the chosen method's constructor signature.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from rspretrain.errors import ConfigError
from rspretrain.optim import OptimConfig
from rspretrain.views.moco_v2 import ViewsConfig

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class DataConfig:
    """Where the pretraining images come from and how they are batched."""

    dataset: str = "eurosat"
    root: str | None = None
    split: str = "train"
    image_size: int | None = None
    max_per_class: int | None = None
    batch_size: int = 64
    num_workers: int = 0
    skip_corrupt: bool = False
    stats_max_images: int = 2000
    natural_dataset: str | None = None
    natural_split: str = "train"
    epoch_length: int | None = None
    #: Further keyword arguments of the dataset (e.g. ``landcover:`` tiles: land_cover, scheme, tile, stride).
    dataset_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainerConfig:
    """Lightning Trainer settings and the run directory."""

    max_steps: int = 1000
    max_time_minutes: float | None = None
    budget_minutes: float | None = None
    budget_clock: str = "wall"  # wall | cpu (process CPU time: fair on a shared machine)
    out_dir: str | None = None
    ckpt_every_n_steps: int = 100
    log_every_n_steps: int = 10
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    channels_last: bool = False  # backbone weights and inputs in NHWC (faster convolutions on recent GPUs)
    compile: str = ""  # a torch.compile backend for the backbones ("inductor", "eager", ...); "" = off
    progress_bar: bool = True


@dataclass
class RunConfig:
    """A whole pretraining run."""

    method: str = "moco"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=OptimConfig)
    #: The chosen method's view-recipe dataclass (``method_cls.views_config_class``; MoCo v2's by default).
    views: Any = field(default_factory=ViewsConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    if origin in (list, tuple, typing.Sequence, __import__("collections.abc").abc.Sequence):
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


def method_parameters(method_cls: type) -> dict[str, Any]:
    """Constructor parameters (name -> annotation) of a method class and its bases."""
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


def validate_model_section(method_cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Check the ``model:`` section against the method's constructor; returns coerced values."""
    from rspretrain.methods.base import DATA_DERIVED

    params = method_parameters(method_cls)
    allowed = {k: v for k, v in params.items() if k not in DATA_DERIVED + ("optim", "views")}
    out = {}
    for key, value in values.items():
        if key in DATA_DERIVED:
            raise ConfigError(f"model.{key} is set from the data, not the config")
        if key not in allowed:
            raise ConfigError(
                f"unknown config key 'model.{key}' for method {method_cls.method_name!r}; "
                f"valid keys: {', '.join(sorted(allowed))}"
            )
        out[key] = coerce(value, allowed[key], f"model.{key}")
    return out


# -- loading -------------------------------------------------------------------------------------
def resolve_config_path(name_or_path: str | Path) -> Path:
    """A config path, or the name of a shipped config (``moco_resnet18_eurosat``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = CONFIG_DIR / (path.name if path.suffix else f"{path.name}.yaml")
    if shipped.is_file():
        return shipped
    available = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"{name_or_path}: config file not found (shipped configs: {available})")


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


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config key '{dotted}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def build_run_config(raw: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate a raw nested dict into a :class:`RunConfig` (model section checked per method)."""
    from rspretrain.methods import get_method

    sections = {f.name for f in dataclasses.fields(RunConfig)}
    for key in raw:
        if key not in sections:
            raise ConfigError(f"unknown config key '{key}' in {source}; valid keys: {', '.join(sorted(sections))}")
    method = coerce(raw.get("method", "moco"), str, "method")
    method_cls = get_method(method)
    return RunConfig(
        method=method,
        seed=coerce(raw.get("seed", 0), int, "seed"),
        data=build_dataclass(DataConfig, raw.get("data") or {}, "data"),
        model=validate_model_section(method_cls, raw.get("model") or {}),
        optim=build_dataclass(OptimConfig, raw.get("optim") or {}, "optim"),
        views=build_dataclass(method_cls.views_config_class, raw.get("views") or {}, "views"),
        trainer=build_dataclass(TrainerConfig, raw.get("trainer") or {}, "trainer"),
    )


def load_config(path: str | Path | None, overrides: list[str] | dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML config (or start from defaults) and apply dotted overrides."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        resolved = resolve_config_path(path)
        source = str(resolved)
        try:
            raw = yaml.safe_load(resolved.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{resolved}: invalid YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{resolved}: a config must be a mapping of sections")
    pairs = parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides or {})
    for key, value in pairs.items():
        _set_dotted(raw, key, value)
    return build_run_config(raw, source)
