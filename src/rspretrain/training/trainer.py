"""The one Lightning harness every training run goes through: pretraining, fine-tuning and the dense tasks.

:func:`build_trainer` turns a :class:`TrainerConfig` into a ``lightning.Trainer`` with what every run gets from one
place: accelerator / devices / nodes / strategy (DDP), precision (``bf16-mixed``, ``16-mixed``), a progress bar,
CSV + TensorBoard logs under ``<out>/logs`` (W&B and MLflow by choice, :mod:`rspretrain.training.loggers`), atomic checkpoints (:class:`~rspretrain.core.checkpoint_io.
AtomicCheckpointIO`) at ``<out>/checkpoints/last.ckpt`` every ``ckpt_every_n_steps`` steps and at the end, an optional
time budget (:class:`~rspretrain.core.time_budget.TimeBudget`) and, through the modules, the non-finite-loss stop
(:func:`~rspretrain.core.non_finite_loss.stop_if_not_finite`). :func:`resume_checkpoint` finds what ``--resume``
continues from; :func:`fit` trains and writes the final checkpoint.

Lightning's start-up is not a reason for a hand-written loop: ``benchmarks/dense_harness.py`` times one dense epoch
through this harness next to a plain PyTorch loop over the same module and batches.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.layer_sync import TorchSyncBatchNorm

from rspretrain.core.checkpoint_io import AtomicCheckpointIO
from rspretrain.core.errors import ConfigError, DataError
from rspretrain.core.ranges import check_ranges
from rspretrain.core.time_budget import CLOCKS, TimeBudget
from rspretrain.training.fast_step import (
    check_channels_last,
    check_compile_backend,
    check_precision,
    resolve_precision,
)
from rspretrain.training.loggers import RecordLoggerRuns, build_loggers, check_loggers

__all__ = ["HARNESS_TRAINER_ARGS", "TimmSyncBatchNorm", "TrainerConfig", "build_trainer", "fit", "resume_checkpoint",
           "trainer_device"]

log = logging.getLogger("rspretrain")

# Our step-keyed data orders (StepIndexedBatchSampler, StepBatches) resume by themselves from the restored global
# step; Lightning cannot see that, so its "dataloader is not resumable" warning would mislead.
warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended")
# Our batches are built in the main process on purpose (they are drawn from a step-keyed generator, not read).
warnings.filterwarnings("ignore", message=r".*does not have many workers which may be a bottleneck.*")
warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined.*")
# A frozen backbone is in eval mode on purpose (BatchNorm keeps its running statistics; see FeaturePyramid).
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training.*")
# Lightning 2.6 calls a torch pytree API that torch 2.14 deprecates; nothing for a user to do.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")


class _LightningNoise(logging.Filter):
    """Drops Lightning's start-up lines that are advertising or about hardware no one has here (TPU / HPU), so a
    run's output is its own; the GPU line stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(("💡 Tip", "TPU available", "HPU available"))


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_LightningNoise())

#: ``lightning.Trainer`` arguments the harness sets itself: the run folder, its checkpoints and their IO, the epoch /
#: time limits it derives, the progress bar switch, no validation loop.
HARNESS_TRAINER_ARGS = frozenset({
    "default_root_dir", "enable_checkpointing", "plugins", "use_distributed_sampler", "max_epochs", "max_time",
    "enable_progress_bar", "limit_val_batches", "num_sanity_val_steps", "enable_model_summary",
})  # fmt: skip

@dataclass
class TrainerConfig:
    """Lightning Trainer settings and the run directory (the ``trainer:`` section of every training config).

    Attributes:
        max_steps: optimiser steps.
        max_epochs: the run's length in epochs of its data (None: ``max_steps``); resolved to ``max_steps`` from the
            data size and the global batch (:func:`rspretrain.training.recipe.resolve_recipe`), replacing it.
        max_time_minutes: hard wall-clock stop.
        budget_minutes: train for this budget with a schedule fitted to the steps that fit
            (:class:`~rspretrain.core.time_budget.TimeBudget`).
        budget_clock: ``wall`` or ``cpu`` (process CPU time: fair on a shared machine).
        out_dir: the run folder (checkpoints, logs, config, provenance).
        ckpt_every_n_steps: atomic ``checkpoints/last.ckpt`` every so many steps (and at the end).
        log_every_n_steps: logging cadence.
        accelerator, devices, num_nodes, strategy: as ``lightning.Trainer``.
        precision: ``auto`` (bf16-mixed where the hardware computes in bf16, else 32-true; see
            :mod:`rspretrain.training.fast_step`), ``32-true``, ``bf16-mixed`` or ``16-mixed``.
        sync_batchnorm: BatchNorm statistics over the global batch (``torch.nn.SyncBatchNorm`` through timm's
            converter, which also converts timm's BatchNorm + activation layers) when training on several GPUs;
            CUDA only (torch's SyncBatchNorm), so on CPU ranks it is a stated no-op.
        channels_last: backbone weights and inputs in NHWC (``auto``: for convolutional backbones).
        compile: a ``torch.compile`` backend for the backbones (``""``: off; a failure falls back to eager).
        progress_bar: show the progress bar.
        loggers: ``csv`` (always), ``tensorboard``, ``wandb`` (offline), ``mlflow`` (a local store); see
            :mod:`rspretrain.training.loggers`.
        logger_options: keyword arguments per logger (``{wandb: {project: ..., offline: false}}``).
        lightning: any further ``lightning.Trainer`` argument (``gradient_clip_val``, ``accumulate_grad_batches``,
            ...); ``callbacks`` and ``logger`` as ``{class_path, init_args}`` specs (Lightning's convention), added
            to the harness's own.
    """

    max_steps: int = 1000
    max_epochs: float | None = None
    max_time_minutes: float | None = None
    budget_minutes: float | None = None
    budget_clock: str = "wall"
    out_dir: str | None = None
    ckpt_every_n_steps: int = 100
    log_every_n_steps: int = 10
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "auto"
    sync_batchnorm: bool = False
    channels_last: bool | str = "auto"
    compile: str = ""
    progress_bar: bool = True
    loggers: list[str] = field(default_factory=lambda: ["csv", "tensorboard"])
    logger_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    lightning: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.precision = check_precision(self.precision)
        self.channels_last = check_channels_last(self.channels_last)
        self.compile = check_compile_backend(self.compile)
        self.loggers = check_loggers(self.loggers, self.logger_options)
        if self.budget_clock not in CLOCKS:
            raise ConfigError(f"trainer.budget_clock: {self.budget_clock!r} is not one of {', '.join(CLOCKS)}")
        taken = sorted(set(self.lightning) & (HARNESS_TRAINER_ARGS | {f.name for f in fields(self)}))
        if taken:
            raise ConfigError(f"trainer.lightning: {', '.join(taken)} set by the harness or by trainer.* itself")
        unknown = sorted(set(self.lightning) - set(inspect.signature(L.Trainer.__init__).parameters))
        if unknown:
            raise ConfigError(f"unknown lightning.Trainer argument(s): {', '.join(f'trainer.{k}' for k in unknown)}")
        for name in ("max_steps", "ckpt_every_n_steps", "log_every_n_steps", "devices", "num_nodes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"trainer.{name} must be a positive integer, got {value!r}")
        check_ranges("trainer", vars(self))


def trainer_device(device: str) -> tuple[str, int | list[int]]:
    """``(accelerator, devices)`` of a torch device string: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto``."""
    kind, _, index = str(device).partition(":")
    accelerators = {"cpu": "cpu", "cuda": "gpu", "gpu": "gpu", "mps": "mps", "auto": "auto"}
    if kind not in accelerators or (index and not index.isdigit()):
        raise ConfigError(f"device {device!r} is not one of cpu, cuda, cuda:N, mps, auto")
    return accelerators[kind], [int(index)] if index else 1


def resume_checkpoint(out: Path, resume: bool | str | Path | None) -> Path | None:
    """The checkpoint ``--resume`` continues from: the given file, or ``<out>/checkpoints/last.ckpt``; None if not
    resuming. A missing file is a :class:`DataError` naming it (a silent fresh start would repeat work unnoticed)."""
    if not resume:
        return None
    path = Path(resume) if isinstance(resume, (str, Path)) else out / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise DataError(f"{path}: no checkpoint to resume from")
    return path


def build_trainer(
    cfg: TrainerConfig,
    out: Path | None,
    *,
    max_epochs: int | None = None,
    callbacks: Sequence[L.Callback] = (),
    resume_from: Path | None = None,
    tensorboard: bool = True,
    use_distributed_sampler: bool = False,
    accelerator: str | None = None,
    devices: int | list[int] | None = None,
) -> L.Trainer:
    """A ``lightning.Trainer`` for ``cfg``, logging and checkpointing under ``out``.

    Args:
        cfg: the settings; ``cfg.max_steps`` bounds the run (with ``max_epochs`` when it is counted in epochs).
        out: the run folder; None: no logs and no checkpoints (an in-memory probe).
        max_epochs: epochs (None: steps only).
        callbacks: added after the harness's own.
        resume_from: the checkpoint a run resumes from (its CSV log keeps the rows before that step).
        tensorboard: False: no TensorBoard events even when ``cfg.loggers`` names them (short downstream runs).
        use_distributed_sampler: let Lightning shard a map-style dataset (False: our samplers shard themselves).
        accelerator, devices: override ``cfg``'s (e.g. from a ``device`` string, see :func:`trainer_device`).
    """
    from rspretrain.core.config import instantiate_class_spec

    if cfg.max_epochs is not None:
        raise ConfigError("trainer.max_epochs: resolve the recipe to steps first (rspretrain.training.recipe."
                          "resolve_recipe; rspretrain pretrain does it)")
    extra = dict(cfg.lightning)
    callbacks = [*callbacks, *(instantiate_class_spec(spec, "trainer.callbacks", L.Callback)
                               for spec in _as_list(extra.pop("callbacks", None)))]
    user_loggers = [instantiate_class_spec(spec, "trainer.logger")
                    for spec in _as_list(extra.pop("logger", None)) if not isinstance(spec, bool)]
    max_minutes = cfg.max_time_minutes
    if cfg.budget_minutes:
        # Equal wall-clock budget: max_steps becomes an upper bound; the steps that fit are measured.
        callbacks.append(TimeBudget(cfg.budget_minutes, clock=cfg.budget_clock))
        # The hard stop is wall-clock: for a CPU-time budget it only guards against a hung run.
        hard_stop = cfg.budget_minutes * (1.1 if cfg.budget_clock == "wall" else 4.0) + 0.5
        max_minutes = min(max_minutes, hard_stop) if max_minutes else hard_stop
    loggers: list = []
    plugins: list = []
    if out is not None:
        names = [n for n in cfg.loggers if tensorboard or n != "tensorboard"]
        loggers = build_loggers(names, cfg.logger_options, out, resume_from)
        if {"wandb", "mlflow"} & set(names):  # the loggers whose runs a resume continues
            callbacks.append(RecordLoggerRuns(out))
        callbacks.append(ModelCheckpoint(dirpath=out / "checkpoints", filename="last",
                                         every_n_train_steps=cfg.ckpt_every_n_steps, save_top_k=1,
                                         enable_version_counter=False))
        plugins = [AtomicCheckpointIO()]
    if cfg.sync_batchnorm:
        plugins += _sync_batchnorm(cfg, accelerator or cfg.accelerator, devices if devices is not None else cfg.devices)
    loggers += user_loggers
    return L.Trainer(
        max_steps=cfg.max_steps,
        max_epochs=max_epochs if max_epochs is not None else -1,
        max_time=timedelta(minutes=max_minutes) if max_minutes else None,
        accelerator=accelerator or cfg.accelerator,
        devices=devices if devices is not None else cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        precision=resolve_precision(cfg.precision, accelerator or cfg.accelerator)[0],
        logger=loggers or False,
        callbacks=callbacks,
        plugins=plugins or None,
        enable_checkpointing=out is not None,
        use_distributed_sampler=use_distributed_sampler,
        log_every_n_steps=cfg.log_every_n_steps,
        enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        default_root_dir=out,
        **extra,
    )


class TimmSyncBatchNorm(TorchSyncBatchNorm):
    """Lightning's SyncBatchNorm plugin with timm's converter, which keeps timm's fused BatchNorm + activation layers
    (``BatchNormAct2d``: EfficientNet, RegNet, ...) whole; torch's converter would turn them into plain BatchNorm and
    drop their activation. Parameter and buffer names do not change, so checkpoints and exports are unaffected."""

    def apply(self, model: torch.nn.Module) -> torch.nn.Module:
        from timm.layers import convert_sync_batchnorm

        return convert_sync_batchnorm(model)


def _sync_batchnorm(cfg: TrainerConfig, accelerator: str, devices: Any) -> list:
    """The SyncBatchNorm plugin when the run spans GPUs; nothing on one device (nothing to sync); on CPU ranks a stated
    no-op (torch's SyncBatchNorm syncs CUDA tensors only and would raise at the first step of a gloo run)."""
    ranks = (devices if isinstance(devices, int) else len(devices) if isinstance(devices, list) else 1) * cfg.num_nodes
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if ranks <= 1:
        return []
    if not on_gpu:
        log.warning("trainer.sync_batchnorm: BatchNorm statistics stay per rank on CPU (torch's SyncBatchNorm needs "
                    "CUDA tensors)")
        return []
    return [TimmSyncBatchNorm()]


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def fit(trainer: L.Trainer, module: L.LightningModule, out: Path | None, resume_from: Path | None = None,
        **fit_kwargs) -> Path | None:
    """``trainer.fit`` (continuing ``resume_from`` when given), then the final checkpoint
    ``<out>/checkpoints/last.ckpt``; returns its path (None without ``out``)."""
    try:
        trainer.fit(module, ckpt_path=str(resume_from) if resume_from else None, **fit_kwargs)
    except SystemExit:
        # Lightning answers Ctrl-C inside fit with a graceful shutdown and sys.exit(1): hand the caller the interrupt
        # it is, so the command can say how to continue.
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    if out is None:
        return None
    final = out / "checkpoints" / "last.ckpt"
    periodic = trainer.checkpoint_callback
    # The periodic checkpoint may already hold the last step (runs whose length is a multiple of the cadence);
    # writing the same state again would cost a second full write.
    if getattr(periodic, "_last_global_step_saved", None) != trainer.global_step or not final.is_file():
        trainer.save_checkpoint(final, weights_only=False)  # the full state: --resume continues from it
    if trainer.is_global_zero:
        log.info("final checkpoint: %s (step %d)", final, trainer.global_step)
    return final
