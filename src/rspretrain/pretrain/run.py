"""Run a pretraining job from a :class:`~rspretrain.pretrain.config.RunConfig` with Lightning.

Lightning owns the loop, devices/DDP, precision, progress bar, CSV + TensorBoard logs and
checkpoints (every ``trainer.ckpt_every_n_steps`` steps, written atomically, to
``<out_dir>/checkpoints/last.ckpt``). ``resume=True`` continues from that file.
"""

from __future__ import annotations

import csv
import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from rspretrain.core import provenance
from rspretrain.core.checkpoint_io import AtomicCheckpointIO, atomic_write_text
from rspretrain.core.config import constructor_parameters
from rspretrain.core.errors import ConfigError, DataError
from rspretrain.core.rng_state import StepSeededRNG
from rspretrain.core.time_budget import TimeBudget
from rspretrain.pretrain.config import RunConfig
from rspretrain.pretrain.datamodule import PretrainDataModule
from rspretrain.pretrain.methods import PretrainMethod, get_method

log = logging.getLogger("rspretrain")

# Lightning cannot see that StepIndexedBatchSampler resumes by itself (it keys the data order
# on the restored global step), so its "dataloader is not resumable" warning would mislead.
warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended")


def run_dir(cfg: RunConfig) -> Path:
    return Path(cfg.trainer.out_dir or f"runs/{cfg.method}")


def build(cfg: RunConfig) -> tuple[PretrainMethod, PretrainDataModule]:
    """The method and its datamodule, with the data-derived model arguments filled in."""
    dm = PretrainDataModule(**asdict(cfg.data), seed=cfg.seed)
    dm.setup("fit")
    method_cls = get_method(cfg.method)
    data_kwargs = dm.model_kwargs()
    accepted = constructor_parameters(method_cls)
    if cfg.data.natural_dataset is None and "class_names" in data_kwargs and "class_names" not in accepted:
        # Land-cover proportions are labels for methods that learn from them (geokr); others just see the tiles.
        data_kwargs = {k: v for k, v in data_kwargs.items() if k not in ("num_classes", "class_names")}
    if getattr(method_cls, "trains_on_labels", False):  # supervised: the main source's own classes
        classes = getattr(dm.dataset, "classes", None)
        if not classes or getattr(dm.dataset, "labels", None) is None:
            raise ConfigError(f"data.dataset {cfg.data.dataset!r} has no labels; method {cfg.method!r} needs them")
        data_kwargs["num_classes"] = len(classes)
    if "num_classes" in data_kwargs and "num_classes" not in accepted:
        raise ConfigError(f"data.natural_dataset is used by methods with a supervised branch (gersp), not {cfg.method!r}")
    model = method_cls(**cfg.model, **data_kwargs, optim=asdict(cfg.optim), views=asdict(cfg.views))
    return model, dm


def pretrain(cfg: RunConfig, resume: bool | str | None = None, callbacks: Sequence[L.Callback] = ()) -> Path:
    """Train; returns the path of the final checkpoint (``<out_dir>/checkpoints/last.ckpt``).

    ``resume`` continues exactly: weights, optimiser, schedule, queue and teacher come from the
    checkpoint; the data order and the augmentation draws are functions of the step
    (:class:`StepIndexedBatchSampler`, :class:`StepSeededRNG`).
    ``callbacks`` are added to the trainer's (e.g. monitors in tests and benchmarks).
    """
    out = run_dir(cfg)
    ckpt_dir = out / "checkpoints"
    ckpt_path = None
    if resume:
        ckpt_path = Path(resume) if isinstance(resume, str) else ckpt_dir / "last.ckpt"
        if not ckpt_path.is_file():
            raise DataError(f"{ckpt_path}: no checkpoint to resume from")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model, dm = build(cfg)
    out.mkdir(parents=True, exist_ok=True)
    record = provenance.collect(cfg.to_dict(), cfg.seed)
    earlier = out / "provenance.json"
    if ckpt_path is not None and earlier.is_file():
        # A resumed run keeps what each earlier segment ran with (code version, host, start time).
        previous = json.loads(earlier.read_text())
        record["earlier_segments"] = [*previous.pop("earlier_segments", []), previous]
    atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    atomic_write_text(out / "provenance.json", json.dumps(record, indent=2) + "\n")
    model.provenance = record  # saved inside every checkpoint (see PretrainMethod.on_save_checkpoint)
    apply_speed_options(model, cfg.trainer.channels_last, cfg.trainer.compile)
    t = cfg.trainer
    callbacks = [StepSeededRNG(cfg.seed), *callbacks]
    max_minutes = t.max_time_minutes
    if t.budget_minutes:
        # Equal wall-clock budget: max_steps becomes an upper bound; the steps that fit are measured.
        callbacks.append(TimeBudget(t.budget_minutes, clock=t.budget_clock))
        # The hard stop is wall-clock: for a CPU-time budget it only guards against a hung run.
        hard_stop = t.budget_minutes * (1.1 if t.budget_clock == "wall" else 4.0) + 0.5
        max_minutes = min(max_minutes, hard_stop) if max_minutes else hard_stop
    trainer = L.Trainer(
        max_steps=t.max_steps,
        max_time=timedelta(minutes=max_minutes) if max_minutes else None,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        logger=[_csv_logger(out, ckpt_path), TensorBoardLogger(out, name="logs", version="")],
        callbacks=callbacks
        + [
            ModelCheckpoint(
                dirpath=ckpt_dir,
                filename="last",
                every_n_train_steps=t.ckpt_every_n_steps,
                save_top_k=1,
                enable_version_counter=False,
            )
        ],
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,  # StepIndexedBatchSampler shards the global batch itself
        log_every_n_steps=t.log_every_n_steps,
        enable_progress_bar=t.progress_bar,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        default_root_dir=out,
    )
    trainer.fit(model, datamodule=dm, ckpt_path=str(ckpt_path) if ckpt_path else None)
    final = ckpt_dir / "last.ckpt"
    trainer.save_checkpoint(final)
    if trainer.is_global_zero:
        log.info("final checkpoint: %s (step %d)", final, trainer.global_step)
    return final


def apply_speed_options(model: PretrainMethod, channels_last: bool = False, compile_backend: str = "") -> None:
    """``trainer.channels_last`` / ``trainer.compile`` on every timm network of the method (student
    and teacher backbones), in place, so parameter names (checkpoints, exports) do not change.

    channels_last converts the weights and, through a forward pre-hook, each input batch to NHWC;
    compile uses ``nn.Module.compile`` (in place, unlike ``torch.compile``'s wrapper module).
    """
    if not channels_last and not compile_backend:
        return
    from rspretrain.nn.backbones import Backbone

    for module in model.modules():
        if not isinstance(module, Backbone):
            continue
        if channels_last:
            module.model.to(memory_format=torch.channels_last)
            module.model.register_forward_pre_hook(_to_channels_last)
        if compile_backend:
            module.model.compile(backend=compile_backend)


def _to_channels_last(module, args):
    x, *rest = args
    if torch.is_tensor(x) and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return (x, *rest)


def _csv_logger(out: Path, resume_from: Path | None) -> CSVLogger:
    """``logs/metrics.csv``; on resume it keeps the rows of the steps the checkpoint holds.

    Lightning's CSV writer deletes an existing ``metrics.csv`` when it starts; a resumed run
    would lose its history. The rows logged before the checkpoint's step are read first and
    written back (rows after it were lost with the kill and are logged again).
    """
    logger = CSVLogger(out, name="logs", version="")
    path = Path(logger.log_dir) / "metrics.csv"
    if resume_from is None or not path.is_file() or rank_zero_only.rank != 0:
        return logger
    step = int(torch.load(resume_from, map_location="cpu", weights_only=True, mmap=True)["global_step"])
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        keys, rows = list(reader.fieldnames or []), [r for r in reader if r.get("step") and int(r["step"]) < step]
    writer = logger.experiment  # this removes the old file
    with open(writer.metrics_file_path, "w", newline="") as f:
        out_csv = csv.DictWriter(f, fieldnames=keys)
        out_csv.writeheader()
        out_csv.writerows(rows)
    writer.metrics_keys = keys
    return logger


def load_checkpoint(path: str | Path) -> dict:
    """A Lightning checkpoint written by rspretrain, loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for bad files
        raise DataError(f"{path}: not a readable checkpoint ({str(err).splitlines()[0]})") from None
    if not isinstance(ckpt, dict) or "rspretrain" not in ckpt:
        raise DataError(f"{path}: not an rspretrain checkpoint (no 'rspretrain' entry)")
    return ckpt


def load_method(path: str | Path) -> PretrainMethod:
    """Rebuild the method from a checkpoint's hyperparameters and load its weights (eval mode)."""
    ckpt = load_checkpoint(path)
    method_cls = get_method(ckpt["rspretrain"]["method"])
    model = method_cls(**ckpt["hyper_parameters"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()
