"""GeoKR: geographical-knowledge-driven representation learning with a noise-robust mean teacher [0] (METHODS.md §3).

Each georeferenced tile comes with the land-cover class proportions of its footprint
(:mod:`rspretrain.data.pretrain.land_cover`: any product, any CRS). A student backbone with a linear head learns to
predict them (soft-target cross-entropy), plus a consistency term towards a teacher that sees the same augmented
view; the teacher is an average of the student updated rarely (``alpha = 0.95`` at growing intervals), so it is a
slow anchor that keeps the student from fitting the labels' noise (a land-cover map made at another time and
resolution). The teacher is what downstream tasks get.

As the official code:

- student and teacher = backbone -> global average pool -> Linear(width -> N classes), no MLP;
- ``L = L_cls + L_cons`` with ``L_cls`` the soft-target CE over batch x classes and ``L_cons`` the
  student-probability-weighted CE towards the teacher's log-probabilities (``consistency="kl"``: ``KL(p_s || p_t)``
  instead), see :mod:`rspretrain.losses.soft_target`;
- the teacher runs on the same view, without gradient, in training mode (its BatchNorm uses the batch's statistics
  and keeps its own running statistics; only parameters are averaged);
- the teacher update runs after the optimiser step, on the exact sparse schedule
  (:class:`~rspretrain.nn.ema_teacher.SparseMomentum`: intervals ``(500, 10500, 20500, 30500)`` scaled by
  ``16 / batch``); ``teacher_schedule="ema"`` updates it every step with ``ema_momentum`` instead;
- Adam (lr 1e-3, no weight decay) with StepLR(gamma 0.9) every epoch (``optim.step_every: 0`` means one epoch);
- views: flips, rotation by k x 90 degrees, colour jitter (:mod:`rspretrain.views.geokr`).

Choices where METHODS.md leaves one or the toolkit differs: the teacher starts as a copy of the student (the
official code builds both from the same ImageNet weights, but their linear heads are initialised independently);
ImageNet initialisation needs a local timm weight file (``init_weights``; no download at run time), so runs start
from scratch by default; the export is the teacher's backbone (``export="student"`` or ``rspretrain export
--network student`` gives the student's); the class list is the scheme's (``nlcd8``, ``globeland30``, ...).

The official patch extraction (METHODS.md §3.2 step 1: per-scene 1-99 percentile stretch to 8 bits, then the
dark / low-contrast / cloud patch filters) is the dataset option ``stretch: percentile`` + ``patch_filters: true``
(:mod:`rspretrain.data.pretrain.patch_extraction`, on in ``geokr_resnet50_paper``). Without it (the Zion config) pixels
are scaled by the data type's maximum and standardised per band with the data's statistics, which keeps N-band
reflectances comparable across scenes, and tiles are dropped for image nodata (``max_nodata_fraction``) and for
missing land cover only. The land-cover edition (the one nearest the acquisition date, METHODS.md §3.7) is the
file the user passes. Like the paper's archive of Gaofen scenes, many scenes train together
(``landcover:A.tif;B.tif``, a :class:`~rspretrain.data.SceneCollection`, each scene aligned in its own CRS). A
scene is held in memory once, in its own dtype, and tiles are converted as they are read (a 13-band uint16 4096²
px scene peaks at 1.4x its size, ``benchmarks/raster_tiles_memory.py``); with ``windowed: true`` no scene is held
at all and each tile is read from the files by window, for archives larger than memory.

References:
    - [0] W. Li, K. Chen, H. Chen, Z. Shi, "Geographical Knowledge-Driven Representation Learning for Remote Sensing
      Images", IEEE TGRS 60, 2022, https://arxiv.org/abs/2107.05276; code
      github.com/flyakon/Geographical-Knowledge-driven-Representaion-Learning
    - [1] A. Tarvainen, H. Valpola, "Mean teachers are better role models", NeurIPS 2017,
      https://arxiv.org/abs/1703.01780
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.losses.soft_target import CONSISTENCY_KINDS, geokr_consistency, soft_target_cross_entropy
from rspretrain.nn.backbones import Backbone, load_timm_weights
from rspretrain.nn.ema_teacher import (
    ConstantMomentum,
    EMATeacher,
    SparseMomentum,
    check_teacher_options,
    sparse_schedule,
)
from rspretrain.nn.heads import LinearClassifier
from rspretrain.pretrain.methods.base import PretrainMethod
from rspretrain.pretrain.methods.registry import register_method
from rspretrain.views.geokr import GeoKRViews, GeoKRViewsConfig

#: The official optimiser: Adam 1e-3, StepLR(gamma 0.9) per epoch (``step_every: 0`` = one epoch).
GEOKR_OPTIM: dict[str, Any] = {
    "name": "adam", "lr": 1e-3, "weight_decay": 0.0, "schedule": "step", "step_gamma": 0.9, "step_every": 0,
}
TEACHER_SCHEDULES = ("sparse", "ema")
EXPORTABLE = ("teacher", "student")


@register_method
class GeoKR(PretrainMethod):
    """GeoKR as a LightningModule (batches carry ``image`` and ``label``: land-cover proportions ``(B, N)``).

    Args:
        num_classes: land-cover classes (set from the data).
        class_names: their names (set from the data; saved in exports).
        consistency: ``"ce"`` (official) or ``"kl"``.
        consistency_weight: weight of the consistency term (1 in the official code).
        teacher_schedule: ``"sparse"`` (official) or ``"ema"`` (every step).
        teacher_alpha: momentum of a sparse update (0.95).
        teacher_intervals: the sparse schedule's intervals before the ``16 / batch`` scaling.
        teacher_batch_size: batch size the intervals are scaled with (None: the training batch, over all devices).
        ema_momentum: momentum of the per-step EMA option.
        export: network whose backbone is exported: ``"teacher"`` (as the paper) or ``"student"``.
        init_weights: a local timm state dict (``.safetensors`` / ``.pth``, e.g. ImageNet ResNet-50) to start both
            networks from; the first convolution is adapted to ``in_chans`` (timm's ``adapt_input_conv``).
        **kwargs: :class:`PretrainMethod` arguments (backbone, in_chans, image_size, band_names, mean, std, ...);
            without ``optim``/``views`` the official recipe is used.
    """

    method_name = "geokr"
    default_config = "geokr_resnet18_zion"
    smoke_overrides = {  # 16 real Zion tiles of 32 px in the scene's corner; the teacher updates after steps 1 and 9
        "data.dataset_options.tile": 32, "data.dataset_options.stride": 32,
        "data.dataset_options.within": [301905.0, 4154085.0 - 3840.0, 301905.0 + 3840.0, 4154085.0],
        "model.backbone": "resnet10t", "model.teacher_intervals": [4, 4],
    }
    export_from = "teacher"
    exportable = EXPORTABLE
    views_config_class = GeoKRViewsConfig
    #: Its labels are land-cover class proportions: ``run.build`` refuses data without them before training starts.
    trains_on_proportions = True

    def __init__(
        self,
        num_classes: int = 10,
        class_names: Sequence[str] | None = None,
        consistency: str = "ce",
        consistency_weight: float = 1.0,
        teacher_schedule: str = "sparse",
        teacher_alpha: float = 0.95,
        teacher_intervals: Sequence[int] = (500, 10500, 20500, 30500),
        teacher_batch_size: int | None = None,
        ema_momentum: float = 0.999,
        export: str = "teacher",
        init_weights: str | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("optim") is None:
            kwargs["optim"] = dict(GEOKR_OPTIM)
        super().__init__(**kwargs)
        self._last_global_batch = 1
        self.save_hyperparameters()
        if consistency not in CONSISTENCY_KINDS:
            raise ConfigError(f"model.consistency: {consistency!r} is not one of {', '.join(CONSISTENCY_KINDS)}")
        if teacher_schedule not in TEACHER_SCHEDULES:
            raise ConfigError(f"model.teacher_schedule: {teacher_schedule!r} is not one of {', '.join(TEACHER_SCHEDULES)}")
        if export not in EXPORTABLE:
            raise ConfigError(f"model.export: {export!r} is not one of {', '.join(EXPORTABLE)}")
        check_teacher_options("model", teacher_alpha, teacher_intervals, ema_momentum)
        if num_classes < 2:
            raise ConfigError(f"GeoKR needs at least 2 land-cover classes, got num_classes={num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ConfigError(f"{len(class_names)} class names for num_classes={num_classes}")
        self.num_classes = num_classes
        self.class_names = tuple(class_names) if class_names is not None else None
        self.consistency, self.consistency_weight = consistency, float(consistency_weight)
        self.teacher_schedule = teacher_schedule
        self.export_from = export
        if init_weights:
            load_timm_weights(self.backbone, init_weights)
        self.student["classifier"] = LinearClassifier(self.backbone.num_features, num_classes)
        # The sparse schedule is scaled by the batch size, known at the first step (see :meth:`schedule_for`).
        schedule = ConstantMomentum(ema_momentum) if teacher_schedule == "ema" else ConstantMomentum(1.0)
        self.teacher = EMATeacher(self.student, schedule)

    def build_views(self, image_size: int, value_scale: float, rgb: Sequence[int] | None) -> GeoKRViews:
        return GeoKRViews(image_size, self.mean, self.std, value_scale, rgb, self.views_cfg)

    def make_views(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """One view: student and teacher see the same augmented image."""
        return self.views(batch["image"], n_views=1)

    # -- networks ------------------------------------------------------------------------------------
    def student_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.student["backbone"](x)
        return self.student["classifier"](pooled), pooled

    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        teacher = self.teacher.module
        return teacher["classifier"](teacher["backbone"](x))

    def backbone_to_export(self) -> Backbone:
        """The teacher's backbone (``export="student"``: the student's)."""
        return self.teacher.module["backbone"] if self.export_from == "teacher" else self.student["backbone"]

    # -- teacher schedule ------------------------------------------------------------------------------
    def schedule_for(self, batch_size: int) -> SparseMomentum:
        """The sparse schedule for a global batch size (``teacher_batch_size`` overrides it)."""
        return sparse_schedule(self.hparams.teacher_alpha, tuple(self.hparams.teacher_intervals),
                               self.hparams.teacher_batch_size or batch_size)

    def teacher_updates(self, step: int, batch_size: int) -> int:
        """How many teacher updates have happened after ``step`` optimiser steps."""
        if self.teacher_schedule == "ema":
            return step
        return len(self.schedule_for(batch_size).update_steps(step))

    def update_teacher(self, step: int, batch_size: int) -> float:
        """Apply the teacher update due after optimiser step ``step`` (1-based); returns the momentum (1 = none)."""
        if self.teacher_schedule == "sparse":
            self.teacher.schedule = self.schedule_for(batch_size)
        return self.teacher.update(self.student, step)

    def _global_batch(self, batch: dict[str, torch.Tensor]) -> int:
        world = self.trainer.world_size if self._trainer is not None else 1
        return int(batch["image"].shape[0]) * int(world)

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        # After the optimiser step, as the official loop. Lightning counts the step as completed only
        # after this hook returns, so global_step is still the number of steps before this one and the
        # 1-based iteration just done is global_step + 1. Here rather than in on_train_batch_end, which
        # Lightning runs after the checkpoint callback, so a checkpoint written at this step holds the
        # updated teacher.
        self.update_teacher(self.global_step + 1, self._last_global_batch)

    # -- loss ----------------------------------------------------------------------------------------
    def _targets(self, batch: dict[str, torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        label = batch.get("label")
        if label is None or not torch.is_tensor(label) or label.ndim != 2 or label.shape[1] != self.num_classes:
            shape = tuple(label.shape) if torch.is_tensor(label) else type(label).__name__
            raise DataError(
                f"geokr needs land-cover proportions (B, {self.num_classes}) in batch['label'], got {shape}; "
                "pretrain on a 'landcover:' dataset (see rspretrain.data.pretrain.land_cover)"
            )
        return label.to(dtype)

    def example_batch(self, batch_size: int, image_size: int, generator: torch.Generator | None = None) -> dict:
        batch = super().example_batch(batch_size, image_size, generator)
        batch["label"] = torch.rand(batch_size, self.num_classes, generator=generator).softmax(dim=1)
        return batch

    def loss_from_views(self, views: list[torch.Tensor], batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        (view,) = views[:1]
        targets = self._targets(batch, view.dtype)
        self._last_global_batch = self._global_batch(batch)  # the sparse schedule's periods scale with it
        logits_s, pooled = self.student_logits(view)
        logits_t = self.teacher_logits(view)
        loss_cls = soft_target_cross_entropy(logits_s, targets)
        loss_cons = geokr_consistency(logits_s, logits_t, self.consistency)
        loss = loss_cls + self.consistency_weight * loss_cons
        with torch.no_grad():
            p_s = logits_s.softmax(dim=1)
            dominant = targets.argmax(dim=1)
            logs = {
                "loss_cls": loss_cls.detach(),
                "loss_consistency": loss_cons.detach(),
                "proportion_l1": (p_s - targets).abs().sum(dim=1).mean(),
                "dominant_accuracy": (logits_s.argmax(dim=1) == dominant).float().mean(),
                "teacher_dominant_accuracy": (logits_t.argmax(dim=1) == dominant).float().mean(),
                "teacher_agreement": (logits_s.argmax(dim=1) == logits_t.argmax(dim=1)).float().mean(),
                "teacher_updates": float(self.teacher_updates(self.global_step, self._global_batch(batch))),
                **self.collapse_monitors(pooled),
            }
        return loss, logs

    # -- optimiser -----------------------------------------------------------------------------------
    def configure_optimizers(self):
        if self.optim_cfg.schedule == "step" and self.optim_cfg.step_every == 0:
            # StepLR per epoch: the epoch length in optimiser steps is known once the data is set up.
            self.optim_cfg.step_every = self._steps_per_epoch()
        return super().configure_optimizers()

    def _steps_per_epoch(self) -> int:
        if self.steps_per_epoch:  # the run's recipe (rspretrain pretrain resolves it, and step_every with it)
            return self.steps_per_epoch
        trainer = self._trainer
        if trainer is None:
            return 1
        trainer.estimated_stepping_batches  # noqa: B018 - sets up the train dataloader and its length
        batches = trainer.num_training_batches
        if isinstance(batches, (int, float)) and math.isfinite(batches) and batches > 0:
            return max(1, int(batches) // max(1, trainer.accumulate_grad_batches))
        dm = getattr(trainer, "datamodule", None)
        if dm is not None and getattr(dm, "dataset", None) is not None:
            return max(1, len(dm.dataset) // (dm.batch_size * trainer.world_size))
        return 1

    def export_metadata(self) -> dict[str, Any]:
        meta = super().export_metadata()
        meta["land_cover_classes"] = list(self.class_names) if self.class_names else None
        meta["teacher_schedule"] = self.teacher_schedule
        return meta
