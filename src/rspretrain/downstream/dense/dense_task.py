"""One LightningModule for the three dense tasks, trained through the one harness (:mod:`rspretrain.training`).

:class:`DenseTask` holds what segmentation, change detection and detection share: a dense model on a private copy of
an encoder (:func:`~.schedule.encoder_pyramid`), AdamW with a decoder and a backbone lr and a per-step warm-up +
cosine schedule (:func:`~.schedule.build_dense_optimizer`), random-crop batches keyed on the step
(:class:`~rspretrain.data.step_batches.StepBatches`: exact ``--resume``, distinct crops per DDP rank) and global RNG
draws keyed on the step (:class:`~rspretrain.core.rng_state.StepSeededRNG`: Faster R-CNN's proposal sampling), the loss
per epoch, and -- from :class:`~rspretrain.training.backbone_module.BackboneModule` -- the non-finite-loss stop and the
logging. A specialisation (:class:`~.segmentation.SegmentationTask`, :class:`~.change_detection.ChangeDetectionTask`,
:class:`~.detection.DetectionTask`) says only what is particular to it: :meth:`build_model`, :meth:`draw` (one batch
from the training data) and :meth:`loss`.

:func:`train_dense_task` runs a task through :func:`rspretrain.training.trainer.build_trainer`, so a dense run gets
precision (``schedule.precision``, e.g. ``bf16-mixed``), the device, a progress bar, CSV logs, an atomic checkpoint
after every epoch and ``resume`` from the one place every other training run gets them from.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from rspretrain.core.rng_state import StepSeededRNG
from rspretrain.data.band_statistics import array_band_statistics
from rspretrain.data.step_batches import StepBatches
from rspretrain.downstream.dense.schedule import (
    DenseSchedule,
    build_dense_optimizer,
    crop_size_for,
    encoder_pyramid,
    steps_for,
    value_scale_for,
)
from rspretrain.downstream.frozen.features import EncoderSpec
from rspretrain.nn.decoders import FeaturePyramid, describe_pyramid
from rspretrain.training.backbone_module import BackboneModule

__all__ = ["DenseTask", "train_comparison_model", "train_dense_task"]

logger = logging.getLogger("rspretrain")


class DenseTask(BackboneModule):
    """A dense model on a copy of ``spec``'s encoder, trained on ``train`` with ``schedule``.

    Args:
        spec: the encoder (its weights are copied, never changed) and its input statistics.
        train: the training data of the task (its images, labels and ``value_scale``).
        schedule: the schedule shared by every encoder of a comparison.
    """

    export_from: ClassVar[str] = "model"

    def __init__(self, spec: EncoderSpec, train: Any, schedule: DenseSchedule) -> None:
        super().__init__()
        self.model_name = spec.name
        self.schedule = schedule
        self.train_data = train
        self.crop_size = crop_size_for(spec, schedule.crop_size)
        self.image_size = int(spec.image_size)
        value_scale = value_scale_for(spec, train.value_scale)
        mean, std = spec.mean, spec.std
        if schedule.input_statistics == "train":
            where = f"{getattr(train, 'root', None) or getattr(train, 'path', 'dense dataset')} (training split)"
            mean, std = array_band_statistics(self.training_images(train), value_scale, where)
        self.set_inputs(len(spec.mean), spec.band_names, mean, std, value_scale)
        torch.manual_seed(schedule.seed)  # the same head initialisation for every encoder of a comparison
        pyramid = encoder_pyramid(spec, schedule.freeze_backbone, schedule.norm_eval)
        self.model = self.build_model(pyramid)
        # Kept as plain attributes: the pyramid is registered once, inside the model.
        self.pyramid_facts = describe_pyramid(pyramid)
        self._backbone_parameters = list(pyramid.backbone_parameters())
        self.steps_per_epoch = steps_for(len(train), schedule)
        self.loss_per_epoch: list[float] = []
        self._epoch_losses: list[torch.Tensor] = []

    # -- what a specialisation says --------------------------------------------------------------------
    def build_model(self, pyramid: FeaturePyramid) -> nn.Module:
        """The dense model over ``pyramid`` (standardising its raw-value inputs itself)."""
        raise NotImplementedError

    def draw(self, rng: np.random.Generator) -> Any:
        """One training batch of ``schedule.batch_size`` crops; everything random comes from ``rng``."""
        raise NotImplementedError

    def loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(loss, terms to log)`` of a batch on the model's device (term names start with ``loss``)."""
        raise NotImplementedError

    # -- Lightning ---------------------------------------------------------------------------------------
    def head_parameters(self) -> list[nn.Parameter]:
        """Every model parameter that is not the encoder's (decoder, heads, adaptors)."""
        backbone = {id(p) for p in self._backbone_parameters}
        return [p for p in self.model.parameters() if id(p) not in backbone]

    def configure_optimizers(self):
        total = self.schedule.epochs * self.steps_per_epoch
        optimizer, scheduler = build_dense_optimizer(self.head_parameters(), self._backbone_parameters, self.schedule,
                                                     total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def train_dataloader(self) -> DataLoader:
        batches = StepBatches(self.draw, self.steps_per_epoch, self.schedule.seed,
                              position=lambda: self.trainer.global_step, rank=self.global_rank)
        return DataLoader(batches, batch_size=None)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, terms = self.loss(batch)
        self.log_training_step(loss, terms)
        self._epoch_losses.append(loss.detach())
        if (self.global_step + 1) % self.steps_per_epoch == 0:
            # Closed here, not in on_train_epoch_end: the epoch's checkpoint is written after this step's
            # batch ends and before the epoch-end hooks, and it must hold this epoch's loss.
            self.loss_per_epoch.append(float(torch.stack(self._epoch_losses).float().mean()))
            self._epoch_losses = []
            logger.info("%s %s: epoch %d/%d, mean loss %.4f", self.method_name, self.model_name,
                        len(self.loss_per_epoch), self.schedule.epochs, self.loss_per_epoch[-1])
        return loss

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["dense_task"] = {"model": self.model_name, "loss_per_epoch": list(self.loss_per_epoch)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.loss_per_epoch = list(checkpoint.get("dense_task", {}).get("loss_per_epoch", []))

    # -- export --------------------------------------------------------------------------------------------
    def input_size(self) -> int:
        return self.crop_size

    def training_images(self, train: Any) -> list[np.ndarray]:
        """The task's training images, ``(C, H, W)`` arrays (``input_statistics="train"`` measures them)."""
        return list(train.images)

    def training_facts(self) -> dict[str, Any]:
        """What a result records about training (besides the steps and time :func:`train_dense_task` adds)."""
        return {"loss_per_epoch": list(self.loss_per_epoch), "crop_size": self.crop_size,
                "value_scale": self.value_scale, "pyramid": self.pyramid_facts, "steps_per_epoch": self.steps_per_epoch,
                "input_mean": [round(m, 6) for m in self.mean], "input_std": [round(v, 6) for v in self.std],
                "input_statistics": self.schedule.input_statistics}



def train_dense_task(
    task: DenseTask,
    out: Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
    callbacks: Sequence[L.Callback] = (),
    lightning: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``task`` for ``schedule.epochs`` epochs through the harness; returns its training facts.

    Args:
        task: the task (eval mode and on ``schedule.device`` on return).
        out: the run folder (``checkpoints/last.ckpt`` after every epoch, ``logs/metrics.csv``); None: nothing
            written.
        resume: continue from ``out/checkpoints/last.ckpt`` when it exists (a finished run returns at once; without
            a checkpoint the task trains from the start).
        progress: show the progress bar (default ``schedule.progress``).
        callbacks: added to the trainer's (monitors in tests and benchmarks).
        lightning: further ``lightning.Trainer`` arguments (``gradient_clip_val``; callbacks / loggers by
            ``class_path``), as :attr:`TrainerConfig.lightning`.
    """
    from rspretrain.training.trainer import TrainerConfig, build_trainer, fit, resume_checkpoint, trainer_device

    schedule = task.schedule
    total = schedule.epochs * task.steps_per_epoch
    accelerator, devices = trainer_device(schedule.device)
    if schedule.devices > 1:  # DDP over that many processes of the device's kind (torchrun's, or spawned)
        devices = schedule.devices
    cfg = TrainerConfig(max_steps=total, ckpt_every_n_steps=task.steps_per_epoch,
                        log_every_n_steps=max(1, min(10, task.steps_per_epoch)), precision=schedule.precision,
                        progress_bar=schedule.progress if progress is None else progress,
                        lightning=dict(lightning or {}))
    # A comparison resumes model by model: one with a checkpoint continues, one without starts.
    last = out / "checkpoints" / "last.ckpt" if out is not None else None
    resume_from = resume_checkpoint(out, resume) if resume and last is not None and last.is_file() else None
    # Global RNG draws inside the model (Faster R-CNN's proposal sampling, dropout) keyed on the step as well.
    trainer = build_trainer(cfg, out, max_epochs=schedule.epochs, resume_from=resume_from, tensorboard=False,
                            accelerator=accelerator, devices=devices,
                            callbacks=[StepSeededRNG(schedule.seed), *callbacks])
    # Lightning keeps each module's train/eval mode; the encoder copy comes from an eval-mode spec, so training
    # mode is set here (a frozen pyramid keeps its backbone in eval mode, see FeaturePyramid.train).
    task.train()
    started = time.perf_counter()
    fit(trainer, task, out, resume_from)
    seconds = time.perf_counter() - started
    # Every rank holds the same trained weights; rank 0 (is_global_zero) scores, on this process's device.
    task.to(trainer.strategy.root_device).eval()
    return {**task.training_facts(), "steps": int(trainer.global_step), "train_seconds": round(seconds, 2),
            "is_global_zero": trainer.is_global_zero, "world_size": trainer.world_size,
            **({"resumed_from": str(resume_from)} if resume_from else {})}


def train_comparison_model(
    task: DenseTask, out: Path | None, resume: bool = False, lightning: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """Train one model of a dense comparison in ``out/training/<model>/`` (nothing written without ``out``).

    Returns its training facts on the process that scores (rank 0), None on the other DDP ranks, which only train.
    """
    folder = out / "training" / task.model_name if out is not None else None
    fit = train_dense_task(task, folder, resume, lightning=lightning)
    return fit if fit.pop("is_global_zero") else None
