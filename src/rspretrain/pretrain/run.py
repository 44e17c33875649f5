"""Run a pretraining job from a :class:`~rspretrain.pretrain.config.RunConfig` through the one harness.

The harness (:mod:`rspretrain.training.trainer`) owns the loop, devices/DDP, precision, progress bar, CSV +
TensorBoard logs and checkpoints (every ``trainer.ckpt_every_n_steps`` steps, written atomically, to
``<out_dir>/checkpoints/last.ckpt``). ``resume=True`` continues from that file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import lightning as L
import torch
import yaml

from rspretrain.core import provenance
from rspretrain.core.checkpoint_io import atomic_write_text
from rspretrain.core.config import constructor_parameters, instantiate_class_spec
from rspretrain.core.errors import ConfigError, DataError, RSPretrainError
from rspretrain.core.json_io import write_json
from rspretrain.core.rng_state import StepSeededRNG
from rspretrain.pretrain.config import RunConfig, _defaults, full_config
from rspretrain.pretrain.datamodule import PretrainDataModule
from rspretrain.pretrain.export import load_weights
from rspretrain.pretrain.knowledge import parse_terms, with_data
from rspretrain.pretrain.methods import METHODS, PretrainMethod, get_method
from rspretrain.training.fast_step import apply_fast_step, check_accelerator, resolve_fast_step
from rspretrain.training.recipe import Recipe, resolve_recipe
from rspretrain.training.run_folder import RunFolderLock, config_changes, is_first_process, prepare_run_folder
from rspretrain.training.trainer import build_trainer, fit, resume_checkpoint

log = logging.getLogger("rspretrain")


def run_dir(cfg: RunConfig) -> Path:
    return Path(cfg.trainer.out_dir or f"runs/{cfg.method}")


def build(cfg: RunConfig) -> tuple[PretrainMethod, L.LightningDataModule, Recipe]:
    """The method and its datamodule, with the data-derived model arguments linked from the data, and the recipe
    resolved for the data's size and the run's devices.

    The link (LightningCLI's ``link_arguments`` applied on instantiation) is the datamodule's ``model_kwargs()``:
    bands, per-band mean / std, value scale and, for labelled sources, the classes, read once the data is set up.
    A user's own datamodule (``datamodule: {class_path, init_args}``) provides the same method, and
    ``samples_per_epoch()`` when its recipe is in epochs. The method is built with the resolved ``optim`` section
    (:func:`~rspretrain.training.recipe.resolve_recipe`: epochs to steps, lr to the global batch).
    """
    method_cls = get_method(cfg.method)
    terms = parse_terms(method_cls.knowledge_config(cfg.model))
    if getattr(method_cls, "trains_on_proportions", False) and cfg.data.natural_dataset is not None:
        raise ConfigError(f"data.natural_dataset {cfg.data.natural_dataset!r}: method {cfg.method!r} has no "
                          "natural_images term; pair natural images with a base (moco, byol, cmid) that takes "
                          "model.knowledge [natural_images, land_cover]")
    if cfg.datamodule is not None:
        dm = instantiate_class_spec(cfg.datamodule, "datamodule", L.LightningDataModule)
        if not callable(getattr(dm, "model_kwargs", None)):
            raise ConfigError(f"datamodule: {cfg.datamodule['class_path']} has no model_kwargs() (the in_chans, "
                              "band_names, mean, std and value_scale the model is built for)")
    else:
        dm = PretrainDataModule(**knowledge_data(cfg, terms), seed=cfg.seed)
    dm.setup("fit")
    data_kwargs = dm.model_kwargs()
    for term in terms:
        if getattr(term, "needs_land_cover", False) and "class_names" not in data_kwargs:
            raise DataError(f"knowledge term {term.name}: data.dataset {cfg.data.dataset!r} has no land-cover "
                            "proportions (the term needs georeferenced tiles with a land-cover product: "
                            "landcover:IMAGES with data.dataset_options.land_cover + scheme, or shards prepared from "
                            "such a source)")
    accepted = constructor_parameters(method_cls)
    model_kwargs = model_arguments(cfg, data_kwargs)
    if "class_names" in data_kwargs and "class_names" not in accepted:
        # Land-cover proportions are labels only for what learns from them (geokr; the land_cover term took its
        # classes in model_arguments above); other methods just see the tiles. With data.natural_dataset, num_classes
        # is the natural images' and stays, so that a base without the natural_images term is refused below.
        dropped = ("class_names",) if cfg.data.natural_dataset is not None else ("num_classes", "class_names")
        data_kwargs = {k: v for k, v in data_kwargs.items() if k not in dropped}
    if getattr(method_cls, "trains_on_labels", False):  # supervised: the main source's own classes
        classes = getattr(dm, "classes", None)
        if not classes:
            raise ConfigError(f"data.dataset {cfg.data.dataset!r} has no labels; method {cfg.method!r} needs them")
        data_kwargs["num_classes"] = len(classes)
    if getattr(method_cls, "trains_on_proportions", False) and "class_names" not in data_kwargs:
        raise DataError(f"data.dataset {cfg.data.dataset!r} has no land-cover proportions; method {cfg.method!r} "
                        "learns from them: pretrain on landcover:IMAGES with data.dataset_options.land_cover + scheme, "
                        "or on shards prepared from such a source")
    if "num_classes" in data_kwargs and "num_classes" not in accepted:
        if "knowledge" not in model_kwargs:
            raise ConfigError(f"data.natural_dataset is the source of the natural_images knowledge term: add "
                              f"model.knowledge [{{natural_images: {{}}}}] to {cfg.method!r}, or use method gersp")
        data_kwargs = {k: v for k, v in data_kwargs.items() if k != "num_classes"}  # the term's: in its options
    recipe = resolve_run_recipe(cfg, dm)
    model = method_cls(**model_kwargs, **data_kwargs, optim=asdict(recipe.optim), views=asdict(cfg.views))
    model.steps_per_epoch = recipe.steps_per_epoch
    recipe.fast_step = resolve_fast_step(cfg.trainer.precision, cfg.trainer.channels_last, cfg.trainer.compile,
                                         cfg.trainer.accelerator, model.backbone, auto_bf16=method_cls.auto_bf16)
    recipe.trainer = dataclasses.replace(recipe.trainer, precision=recipe.fast_step.precision,
                                         channels_last=recipe.fast_step.channels_last)
    if callable(getattr(dm, "set_decode_crops", None)):  # streamed data is cropped at decode time, by the recipe
        dm.set_decode_crops(model.input_size(), *model.decode_crop_scales())
    return model, dm, recipe


def knowledge_data(cfg: RunConfig, terms: list | None = None) -> dict:
    """The datamodule's arguments (``data:``) with the sources of the method's knowledge terms paired in (the
    ``natural_images`` term's labeled natural images: ``data.natural_dataset``); ``terms``: the method's parsed
    terms, if the caller has them.

    Raises:
        ConfigError: a term without its data source, naming the term.
    """
    data = asdict(cfg.data)
    if terms is None:
        terms = parse_terms(get_method(cfg.method).knowledge_config(cfg.model))
    for term in terms:
        term.configure_data(data)
    return data


def model_arguments(cfg: RunConfig, data_kwargs: dict) -> dict:
    """``cfg.model`` with the knowledge terms' data-derived options (their classes) filled from the data."""
    if not cfg.model.get("knowledge"):
        return dict(cfg.model)
    return {**cfg.model, "knowledge": with_data(cfg.model["knowledge"], data_kwargs)}


def resolve_run_recipe(cfg: RunConfig, dm: L.LightningDataModule | None = None,
                       samples_per_epoch: int | None = None) -> Recipe:
    """``cfg``'s recipe for the epoch size of ``dm`` (or ``samples_per_epoch``) and its devices; also checks that the
    method's negative queue takes whole global batches (MoCo's ``K % batch == 0``).

    Raises:
        ConfigError: see :func:`~rspretrain.training.recipe.resolve_recipe`; a queue that is not a multiple of the
            global batch.
    """
    if samples_per_epoch is None and dm is not None and callable(getattr(dm, "samples_per_epoch", None)):
        samples_per_epoch = int(dm.samples_per_epoch())
    recipe = resolve_recipe(cfg.optim, cfg.trainer, cfg.data.batch_size, samples_per_epoch)
    default = _defaults(get_method(cfg.method)).get("queue_size")
    queue = cfg.model.get("queue_size", None if default is None else default.default)
    keys = cfg.data.batch_size * recipe.world_size  # one step's keys from every rank
    # A queue smaller than one step's keys keeps the newest (tiny smoke runs); a larger one must take whole batches,
    # or the FIFO would split a batch across its end (the official MoCo asserts the same).
    if isinstance(queue, int) and queue > keys and queue % keys:
        raise ConfigError(f"model.queue_size {queue} is not a multiple of the global batch {keys} "
                          f"({cfg.data.batch_size} x {recipe.world_size} rank(s)); MoCo's queue takes whole batches")
    return recipe


def pretrain(cfg: RunConfig, resume: bool | str | None = None, callbacks: Sequence[L.Callback] = (),
             overwrite: bool = False, allow_config_change: bool = False) -> Path:
    """Train; returns the path of the final checkpoint (``<out_dir>/checkpoints/last.ckpt``).

    ``resume`` continues exactly: weights, optimiser, schedule, queue and teacher come from the
    checkpoint; the data order and the augmentation draws are functions of the step
    (:class:`StepIndexedBatchSampler`, :class:`StepSeededRNG`).
    ``callbacks`` are added to the trainer's (e.g. monitors in tests and benchmarks). The ``monitor:`` section is
    implemented by a callback of a later stage (the kNN lives in ``downstream/``), so a set ``monitor.dataset`` needs
    ``callbacks=monitor_callbacks(cfg)`` (:mod:`rspretrain.downstream.frozen.knn_monitor`; the command line passes
    it) and is refused without it rather than silently ignored.

    The run folder is locked for the run's lifetime, and a folder that holds a run is continued (``resume``) or
    replaced (``overwrite``), never silently mixed; a resumed run that changes the data, model, views, optimiser or
    global batch of its checkpoint is refused unless ``allow_config_change`` (:mod:`rspretrain.training.run_folder`).
    """
    check_accelerator(cfg.trainer.accelerator)  # a machine without the device: one line, before the run folder
    monitored = any(getattr(cb, "config_section", None) == "monitor" for cb in callbacks)
    if cfg.monitor.dataset is not None and not monitored:
        raise ConfigError(f"monitor.dataset is {cfg.monitor.dataset!r} but pretrain() got no monitor callback: pass "
                          "callbacks=monitor_callbacks(cfg) (rspretrain.downstream.frozen.knn_monitor)")
    out = run_dir(cfg)
    first = is_first_process()
    with RunFolderLock(out) if first else contextlib.nullcontext():
        if first:
            prepare_run_folder(out, bool(resume), overwrite)
        ckpt_path = resume_checkpoint(out, resume)
        if ckpt_path is not None and not allow_config_change:
            _refuse_config_changes(ckpt_path, cfg)
        return _train(cfg, out, ckpt_path, callbacks)


def _refuse_config_changes(ckpt_path: Path, cfg: RunConfig) -> None:
    stamp = load_checkpoint(ckpt_path).get("rspretrain") or {}
    before = (stamp.get("provenance") or {}).get("config")
    if not isinstance(before, dict):
        return  # a checkpoint written before configs were stamped: nothing to compare with
    changes = config_changes(before, cfg.to_dict())
    if changes:
        raise ConfigError(f"--resume from {ckpt_path} with another config ({'; '.join(changes)}); resume with the "
                          "checkpoint's config, or pass --allow-config-change to continue with this one")


def _train(cfg: RunConfig, out: Path, ckpt_path: Path | None, callbacks: Sequence[L.Callback]) -> Path:
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model, dm, recipe = build(cfg)
    log.info("%s", recipe.summary())
    log.info("%s", recipe.fast_step.summary())
    out.mkdir(parents=True, exist_ok=True)
    record = provenance.collect(cfg.to_dict(), cfg.seed)
    record["recipe"] = recipe_record(recipe)
    record["fast_step"] = recipe.fast_step.record()
    earlier = out / "provenance.json"
    if ckpt_path is not None and earlier.is_file():
        # A resumed run keeps what each earlier segment ran with (code version, host, start time).
        previous = json.loads(earlier.read_text())
        record["earlier_segments"] = [*previous.pop("earlier_segments", []), previous]
    if is_first_process():  # the folder's owner writes its files (other ranks may start before it has checked it)
        # The whole resolved run, readable back with --config (the same YAML --print_config shows).
        atomic_write_text(out / "config.yaml", yaml.safe_dump(full_config(cfg), sort_keys=False))
        write_json(out / "provenance.json", record)
    model.provenance = record  # saved inside every checkpoint (see BackboneModule.on_save_checkpoint)
    apply_fast_step(model, recipe.fast_step.channels_last, recipe.fast_step.compile)
    # StepIndexedBatchSampler shards the global batch itself: Lightning's distributed sampler only for a user's
    # own datamodule.
    trainer = build_trainer(recipe.trainer, out, callbacks=[StepSeededRNG(cfg.seed), *callbacks], resume_from=ckpt_path,
                            use_distributed_sampler=cfg.datamodule is not None)
    return fit(trainer, model, out, ckpt_path, datamodule=dm)


def recipe_record(recipe: Recipe) -> dict:
    """The resolved recipe as saved in ``provenance.json``: global batch, epoch size, steps, lr, and every value the
    resolution changed (given -> resolved)."""
    return {
        "global_batch": recipe.global_batch, "world_size": recipe.world_size,
        "samples_per_epoch": recipe.samples_per_epoch, "steps_per_epoch": recipe.steps_per_epoch, "max_steps": recipe.trainer.max_steps, "epochs": recipe.epochs,
        "lr": recipe.optim.lr, "warmup_steps": recipe.optim.warmup_steps,
        "resolved": {k: {"given": v[0], "resolved": v[1]} for k, v in recipe.resolved.items()},
    }


def load_checkpoint(path: str | Path) -> dict:
    """A Lightning checkpoint written by rspretrain, loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:
        # mmap: reading the stamp (resume checks, info) does not read the weights; they are paged in when used
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for bad files
        import zipfile

        why = "not a torch.save zip archive" if not zipfile.is_zipfile(path) else str(err).splitlines()[0]
        raise DataError(f"{path}: not a readable checkpoint ({why})") from None
    if not isinstance(ckpt, dict) or "rspretrain" not in ckpt:
        raise DataError(f"{path}: not an rspretrain checkpoint (no 'rspretrain' entry)")
    return ckpt


def load_method(path: str | Path) -> PretrainMethod:
    """Rebuild the method from a checkpoint's hyperparameters and load its weights (eval mode)."""
    ckpt = load_checkpoint(path)
    stamp = ckpt["rspretrain"]
    missing = [key for key in ("state_dict", "hyper_parameters") if not isinstance(ckpt.get(key), dict)]
    if not isinstance(stamp, dict) or "method" not in stamp:
        missing.append("rspretrain.method")
    if missing:
        raise DataError(f"{path}: a damaged or foreign checkpoint (no {', '.join(missing)})")
    name, class_path = stamp["method"], stamp.get("class_path")
    if name in METHODS:
        method_cls = METHODS[name]
    elif class_path:  # a user's own method is not in the registry: its checkpoint names its class
        method_cls = get_method(class_path)
        registered = next((key for key, cls in METHODS.items() if cls is method_cls), None)
        if registered is not None:  # a registered class under another name: the stamp was edited
            raise DataError(f"{path}: its stamp names method {name!r} but its class is {class_path} ({registered!r}); "
                            "a damaged or edited checkpoint")
    else:
        raise DataError(f"{path}: method {name!r} is not registered and the checkpoint names no class_path")
    try:
        model = method_cls(**ckpt["hyper_parameters"])
    except (TypeError, ValueError, RSPretrainError) as err:
        raise DataError(f"{path}: its hyper_parameters do not build {method_cls.__name__} "
                        f"({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
    load_weights(model, ckpt["state_dict"], path, method_cls.__name__)
    return model.eval()
