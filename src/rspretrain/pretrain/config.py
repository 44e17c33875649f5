"""Run configuration: YAML files that compose, dotted command-line overrides, strict validation.

One parser (:func:`config_parser`, jsonargparse -- the parser under LightningCLI -- with Lightning's conventions)
reads a pretraining run from any number of ``--config`` files (later ones override earlier ones) and
``--section.key value`` overrides (values parsed as YAML, so ``--optim.lr 0.1`` is a float and
``--data.max_per_class null`` is None). A run config has the sections ``data``, ``model``, ``optim``, ``views``,
``trainer`` and ``monitor`` plus ``method``, ``seed`` and ``datamodule``:

- ``method``: a registered name (``moco``, ``cmid``...) or a user's own :class:`PretrainMethod` subclass by its
  import path (``mypackage.methods.MyMethod``); for a base objective (``moco``, ``byol``, ``cmid``) the ``model``
  section's ``knowledge`` list attaches knowledge terms, each with its weight and its own data source
  (``knowledge: [{natural_images: {weight: 1.0, dataset: cifar10}}]``, :mod:`rspretrain.pretrain.knowledge`);
  ``gersp`` is the preset ``moco`` + ``natural_images``;
- ``datamodule``: a user's own ``LightningDataModule`` by ``class_path`` / ``init_args`` (default: the
  :class:`~rspretrain.pretrain.datamodule.PretrainDataModule` built from ``data``); the data-derived model arguments
  (bands, mean/std, value scale, classes) are linked from it through its ``model_kwargs()``;
- ``trainer``: :class:`~rspretrain.training.trainer.TrainerConfig` plus any ``lightning.Trainer`` argument
  (``gradient_clip_val``, ``accumulate_grad_batches``...), callbacks and loggers by ``class_path``.
- ``monitor``: :class:`MonitorConfig`, the online kNN monitor (off unless ``monitor.dataset`` is set; it does not
  change what is trained, so ``--resume`` may change it).

An unknown key or a value of the wrong type is one :class:`~rspretrain.core.errors.ConfigError` line that names the
key. The ``model`` and ``views`` sections are checked against the chosen method's constructor and view recipe.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rspretrain.core.config import (
    build_dataclass,
    coerce,
    constructor_parameters,
    override_arguments,
    parse_arguments,
)
from rspretrain.core.errors import ConfigError
from rspretrain.core.optim import OptimConfig
from rspretrain.core.ranges import check_ranges
from rspretrain.data.shards.decode_crops import DEFAULT_MAX_IMAGE_PIXELS
from rspretrain.pretrain.knowledge import parse_terms
from rspretrain.pretrain.methods import get_method
from rspretrain.training.backbone_module import DATA_DERIVED
from rspretrain.training.recipe import EPOCH_KEYS
from rspretrain.training.trainer import HARNESS_TRAINER_ARGS, TrainerConfig
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
    #: Decode size of an in-memory natural source whose images differ in size (None: their own size).
    natural_image_size: int | None = None
    #: Streamed data (``shards:``): the largest image read, width x height (the pixel-limit policy).
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    #: Streamed data from object storage: local chunk cache folder, and the storage client's options.
    shard_cache: str | None = None
    storage_options: dict[str, Any] = field(default_factory=dict)
    #: Image-file sources: read in ``memory``, ``stream`` (prepared once into shards in the cache) or ``auto`` (stream
    #: when the decoded images would exceed ``memory_limit_gb``).
    loading: str = "auto"
    memory_limit_gb: float = 8.0
    #: How streamed data's DataLoader workers start: ``fork``, ``forkserver``, ``spawn`` or ``auto`` (spawn when the
    #: run has several ranks, else fork; see PretrainDataModule.worker_context).
    worker_start: str = "auto"

    def __post_init__(self) -> None:
        check_ranges("data", vars(self))


@dataclass
class MonitorConfig:
    """The online kNN monitor: every ``every_n_steps`` steps a weighted kNN (k, temperature) on held-out labelled
    images scores the student backbone (:class:`~rspretrain.downstream.frozen.knn_monitor.KNNMonitor`).

    Off while ``dataset`` is None. ``dataset`` is a labelled scene dataset as ``rspretrain evaluate --dataset`` names
    it (``eurosat``, ``ucmerced``, ``folder:PATH``, ...): its train split, at most ``max_train_per_class`` images per
    class, is the kNN's memory, its test split, at most ``max_test_per_class`` per class, is scored. ``root`` is its
    data root (None: ``data.root``); ``batch_size`` is images per forward pass of the monitor.
    """

    dataset: str | None = None
    root: str | None = None
    every_n_steps: int = 100
    k: int = 20
    temperature: float = 0.07
    max_train_per_class: int = 100
    max_test_per_class: int = 50
    batch_size: int = 256

    def __post_init__(self) -> None:
        check_ranges("monitor", vars(self))


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
    #: A user's own LightningDataModule (``{"class_path": ..., "init_args": {...}}``); None: ``data`` builds ours.
    datamodule: dict[str, Any] | None = None
    monitor: MonitorConfig = field(default_factory=MonitorConfig)

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
    check_ranges("model", out)
    knowledge_config = getattr(method_cls, "knowledge_config", None)
    if knowledge_config is not None:
        parse_terms(knowledge_config(out))  # unknown terms and options are one line before anything is built
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
    datamodule = raw.get("datamodule")
    if datamodule is not None and (not isinstance(datamodule, dict) or "class_path" not in datamodule):
        raise ConfigError(f"datamodule: expected {{class_path: ..., init_args: {{...}}}}, got {datamodule!r}")
    return RunConfig(
        method=method,
        seed=coerce(raw.get("seed", 0), int, "seed"),
        data=build_dataclass(DataConfig, raw.get("data") or {}, "data"),
        model=validate_model_section(method_cls, raw.get("model") or {}),
        optim=build_dataclass(OptimConfig, raw.get("optim") or {}, "optim"),
        views=_checked("views", build_dataclass(method_cls.views_config_class, raw.get("views") or {}, "views")),
        trainer=build_dataclass(TrainerConfig, raw.get("trainer") or {}, "trainer"),
        datamodule=datamodule,
        monitor=build_dataclass(MonitorConfig, raw.get("monitor") or {}, "monitor"),
    )


def _checked(section: str, values: Any) -> Any:
    check_ranges(section, vars(values))
    return values


def config_parser():
    """The jsonargparse parser of a pretraining run (see the module docstring); built on every call (cheap)."""
    import lightning as L
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog="rspretrain pretrain", exit_on_error=False, default_env=False)
    parser.add_argument("--config", "-c", action=ActionConfigFile, help="YAML config; several compose, in order")
    parser.add_argument("--method", type=str, default="moco", help="registered method or path.to.MyMethod")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=DataConfig, default=DataConfig())
    parser.add_argument("--datamodule", type=typing.Optional[L.LightningDataModule], default=None,
                        help="a user's own LightningDataModule by class_path (replaces data)")
    parser.add_argument("--model", type=dict[str, Any], default={}, help="the method's constructor arguments")
    parser.add_argument("--optim", type=OptimConfig, default=OptimConfig())
    parser.add_argument("--views", type=dict[str, Any], default={}, help="the method's view recipe")
    parser.add_argument("--monitor", type=MonitorConfig, default=MonitorConfig(), help="the online kNN monitor")
    # Any lightning.Trainer argument (callbacks and loggers by class_path), then the harness's own settings.
    # trainer.precision is ours (it adds ``auto`` and admits only the precisions the methods are built for).
    added = parser.add_class_arguments(L.Trainer, "trainer", skip=set(HARNESS_TRAINER_ARGS) | {"precision"},
                                       instantiate=False, fail_untyped=False, sub_configs=True)
    hints = typing.get_type_hints(TrainerConfig)
    for f in dataclasses.fields(TrainerConfig):
        if f.name == "lightning":
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        if f"trainer.{f.name}" in added:
            parser.set_defaults({f"trainer.{f.name}": default})
        else:
            parser.add_argument(f"--trainer.{f.name}", type=hints[f.name], default=default)
    return parser


def load_config(
    path: str | Path | list[str | Path] | None, overrides: list[str] | dict[str, Any] | None = None
) -> RunConfig:
    """Read YAML config(s) (or start from defaults; several compose, later ones win) and apply dotted overrides."""
    paths = [] if path is None else [path] if isinstance(path, (str, Path)) else list(path)
    argv: list[str] = []
    for given in paths:
        resolved = resolve_config_path(given)
        try:
            content = yaml.safe_load(resolved.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"{resolved}: invalid YAML ({str(err).splitlines()[0]})") from None
        if content is not None and not isinstance(content, dict):
            raise ConfigError(f"{resolved}: a config must be a mapping of sections")
        argv += ["--config", str(resolved)]
    parser = config_parser()
    raw = parse_arguments(parser, argv + _latest_twin_wins(override_arguments(overrides)))
    raw.pop("config", None)
    raw.pop("__path__", None)
    raw["trainer"] = _split_trainer_section(raw.get("trainer") or {}, parser)
    return build_run_config(raw, ", ".join(str(p) for p in paths) or "defaults")


#: A length given in steps and the same length in epochs (or as a fraction of the run); in a config the epochs
#: win, so an override of the step key also clears its twin (``--trainer.max_steps 100`` on a config in epochs).
STEP_TWINS = {**{steps: epochs for epochs, steps in EPOCH_KEYS.items()},
              "model.teacher_temp_warmup_fraction": "model.teacher_temp_warmup_epochs"}


def _latest_twin_wins(tokens: list[str]) -> list[str]:
    """``tokens`` plus ``--<epoch twin>=null`` for every step key they set whose epoch twin they do not set."""
    given = {t.removeprefix("--").split("=", 1)[0] for t in tokens if t.startswith("--")}
    return tokens + [f"--{STEP_TWINS[key]}=null" for key in STEP_TWINS if key in given and STEP_TWINS[key] not in given]


def _split_trainer_section(values: dict[str, Any], parser) -> dict[str, Any]:
    """The harness's own trainer settings, plus ``lightning``: the other Trainer arguments that differ from
    Lightning's defaults (they go to ``lightning.Trainer`` as given)."""
    own = {f.name for f in dataclasses.fields(TrainerConfig)}
    defaults = parser.get_defaults().as_dict().get("trainer", {})
    out = {k: v for k, v in values.items() if k in own and k != "lightning"}
    if "precision" in out:
        out["precision"] = str(out["precision"])  # a YAML 32 / 16 is Lightning's short form, read as a string
    if isinstance(out.get("devices"), str) and out["devices"].isdigit():
        out["devices"] = int(out["devices"])  # Lightning's type puts str before int: "2" is a count here
    out["lightning"] = {k: v for k, v in values.items() if k not in own and v != defaults.get(k)}
    return out


def full_config(cfg: RunConfig) -> dict[str, Any]:
    """``cfg`` as a YAML-ready dict with every model argument shown (the method's defaults filled in) and the
    Lightning Trainer arguments inside ``trainer``: what ``--print_config`` prints and ``--config`` reads back."""
    from rspretrain.core.json_io import jsonable

    method_cls = get_method(cfg.method)
    model = {k: p.default for k, p in _defaults(method_cls).items()}
    out = jsonable(cfg.to_dict())
    out["model"] = jsonable({**model, **cfg.model})
    trainer = out["trainer"]
    trainer.update(trainer.pop("lightning") or {})
    return out


def _defaults(method_cls: type) -> dict[str, Any]:
    import inspect

    params = inspect.signature(method_cls.__init__).parameters
    skip = set(DATA_DERIVED) | {"self", "optim", "views"}
    return {k: p for k, p in params.items()
            if k not in skip and p.default is not inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD}
