"""Run a pretraining job from a :class:`~rspretrain.config.RunConfig` with Lightning.

Lightning owns the loop, devices/DDP, precision, progress bar, CSV + TensorBoard logs and
checkpoints (every ``trainer.ckpt_every_n_steps`` steps, written atomically, to
``<out_dir>/checkpoints/last.ckpt``). ``resume=True`` continues from that file.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from rspretrain import provenance
from rspretrain.checkpoint_io import AtomicCheckpointIO, atomic_write_text
from rspretrain.config import RunConfig, method_parameters
from rspretrain.datamodules.pretrain import PretrainDataModule
from rspretrain.errors import ConfigError, DataError
from rspretrain.time_budget import TimeBudget
from rspretrain.methods import PretrainMethod, get_method

log = logging.getLogger("rspretrain")


def run_dir(cfg: RunConfig) -> Path:
    return Path(cfg.trainer.out_dir or f"runs/{cfg.method}")


def build(cfg: RunConfig) -> tuple[PretrainMethod, PretrainDataModule]:
    """The method and its datamodule, with the data-derived model arguments filled in."""
    dm = PretrainDataModule(**asdict(cfg.data), seed=cfg.seed)
    dm.setup("fit")
    method_cls = get_method(cfg.method)
    data_kwargs = dm.model_kwargs()
    if "num_classes" in data_kwargs and "num_classes" not in method_parameters(method_cls):
        raise ConfigError(f"data.natural_dataset is used by methods with a supervised branch (gersp), not {cfg.method!r}")
    model = method_cls(**cfg.model, **data_kwargs, optim=asdict(cfg.optim), views=asdict(cfg.views))
    return model, dm


def pretrain(cfg: RunConfig, resume: bool | str | None = None) -> Path:
    """Train; returns the path of the final checkpoint (``<out_dir>/checkpoints/last.ckpt``)."""
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
    atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    atomic_write_text(out / "provenance.json", json.dumps(record, indent=2) + "\n")
    model.provenance = record  # saved inside every checkpoint (see PretrainMethod.on_save_checkpoint)
    t = cfg.trainer
    callbacks: list[L.Callback] = []
    max_minutes = t.max_time_minutes
    if t.budget_minutes:
        # Equal wall-clock budget: max_steps becomes an upper bound; the steps that fit are measured.
        callbacks.append(TimeBudget(t.budget_minutes))
        hard_stop = t.budget_minutes * 1.1 + 0.5
        max_minutes = min(max_minutes, hard_stop) if max_minutes else hard_stop
    trainer = L.Trainer(
        max_steps=t.max_steps,
        max_time=timedelta(minutes=max_minutes) if max_minutes else None,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        logger=[CSVLogger(out, name="logs", version=""), TensorBoardLogger(out, name="logs", version="")],
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
