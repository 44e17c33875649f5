"""Run configuration: YAML files, dotted command-line overrides, strict validation.

A run config has the sections ``data``, ``model``, ``optim``, ``views`` and ``trainer`` plus
the top-level keys ``method`` and ``seed``. Every key can be overridden on the command line
as ``--section.key value`` (values are parsed as YAML, so ``--optim.lr 0.1`` is a float and
``--data.max_per_class null`` is None). An unknown key or a value of the wrong type is a
:class:`~rspretrain.core.errors.ConfigError` that names the key. The ``model`` section is checked
against the chosen method's constructor signature.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rspretrain.core.config import build_dataclass, coerce, constructor_parameters, parse_overrides, set_dotted
from rspretrain.core.errors import ConfigError
from rspretrain.core.optim import OptimConfig
from rspretrain.pretrain.methods import get_method
from rspretrain.training.backbone_module import DATA_DERIVED
from rspretrain.training.trainer import TrainerConfig
from rspretrain.views.moco_v2 import ViewsConfig

CONFIG_DIR = Path(__file__).parents[1] / "configs"


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


def validate_model_section(method_cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Check the ``model:`` section against the method's constructor; returns coerced values."""
    params = constructor_parameters(method_cls)
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


def build_run_config(raw: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate a raw nested dict into a :class:`RunConfig` (model section checked per method)."""
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
        set_dotted(raw, key, value)
    return build_run_config(raw, source)
