"""GeoKR's knowledge term: predict each georeferenced tile's land-cover class proportions [0] (METHODS.md §3), on any
base.

The RS images are tiles of georeferenced scenes with a land-cover product (``data.dataset: landcover:...``, or shards
prepared from such a source): every batch carries ``label``, the ``(B, N)`` proportions of the product's classes in
each tile's footprint (:mod:`rspretrain.data.pretrain.land_cover`). The term makes one view of each whole tile with
GeoKR's recipe (flips, rotations by 90 degrees, colour jitter: nothing that moves the footprint, so the proportions
stay the target; :class:`~rspretrain.views.geokr.GeoKRViews`), runs it through the student backbone in the base's
one shared forward (after the base's query view), and a linear head on the pooled features gives
``L_cls = soft-target cross-entropy(logits, proportions)`` (:func:`~rspretrain.losses.soft_target.soft_target_cross_entropy`).

``teacher`` chooses GeoKR's noise-robust scheme, for labels made at another time and resolution than the image:

- ``sparse`` (GeoKR's): a mean teacher of the student backbone and the land-cover head, updated with momentum
  ``teacher_alpha`` at GeoKR's growing intervals (:class:`~rspretrain.nn.ema_teacher.SparseMomentum`, scaled by
  ``16 / global batch``), sees the same view without gradient; ``L = L_cls + consistency_weight * L_cons``
  (:func:`~rspretrain.losses.soft_target.geokr_consistency`);
- ``ema``: the same teacher updated every step with ``ema_momentum``;
- ``none``: ``L_cls`` alone (the product's labels taken as they are).

The teacher's update for optimiser step ``i`` (GeoKR: right after that step) runs at the start of step ``i + 1``,
before the teacher's forward: the same teacher sees the same batches, except that the last step's update is not
made (the term's teacher is not exported; the base exports its own backbone). With ``weight = 1`` and
``teacher: sparse`` the term's loss is GeoKR's on the same view and networks (``tests/pretrain/knowledge/
test_land_cover.py``); what differs from the ``geokr`` method is only what a term is: the student's BatchNorm sees
the base's query view in the same forward, and the base's own loss is added.

Choices: the term's parts that are not the student's (its view recipe and its teacher) live in the method's
``knowledge_modules``, so they move to the device and are saved in checkpoints (a resumed run continues the teacher)
but are never optimised; a streamed base keeps whole images at decode time when this term is attached (the base's
crops are then made on the device), since the proportions describe the whole tile.

References:
    - [0] W. Li, K. Chen, H. Chen, Z. Shi, "Geographical Knowledge-Driven Representation Learning for Remote Sensing
      Images", IEEE TGRS 60, 2022, https://arxiv.org/abs/2107.05276
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from rspretrain.core.bands import rgb_indices
from rspretrain.core.errors import ConfigError, DataError
from rspretrain.losses.soft_target import CONSISTENCY_KINDS, geokr_consistency, soft_target_cross_entropy
from rspretrain.nn.ema_teacher import (
    ConstantMomentum,
    EMATeacher,
    SparseMomentum,
    check_teacher_options,
    sparse_schedule,
)
from rspretrain.pretrain.knowledge.base import KnowledgeTerm, register_term
from rspretrain.views.geokr import GeoKRViews, GeoKRViewsConfig

TEACHERS = ("sparse", "ema", "none")
#: Where :meth:`LandCover.make_views` leaves its view in the step's batch for the teacher in :meth:`LandCover.loss`.
VIEW_KEY = "land_cover_view"


@register_term
class LandCover(KnowledgeTerm):
    """Land-cover proportions of each tile as a soft target, optionally with GeoKR's mean teacher.

    Args:
        weight: the term's weight in the total loss.
        teacher: ``"sparse"`` (GeoKR's), ``"ema"`` or ``"none"`` (see the module docstring).
        consistency: ``"ce"`` (GeoKR's) or ``"kl"``.
        consistency_weight: weight of the consistency towards the teacher.
        teacher_alpha: momentum of a sparse update (0.95).
        teacher_intervals: the sparse schedule's intervals before the ``16 / batch`` scaling.
        teacher_batch_size: the batch the intervals are scaled with (None: the global training batch).
        ema_momentum: momentum of the per-step option.
        num_classes, class_names: the land-cover classes (set from the data).
    """

    name = "land_cover"
    shared_inputs = 1
    #: The student entry of the land-cover head.
    head = "land_cover"
    #: Its labels describe whole tiles: streamed data is not cropped at decode time.
    needs_whole_image = True
    #: The run refuses a main source without land-cover proportions (``run.build``), naming the term and the source.
    needs_land_cover = True

    def __init__(self, weight: float = 1.0, teacher: str = "sparse", consistency: str = "ce",
                 consistency_weight: float = 1.0, teacher_alpha: float = 0.95,
                 teacher_intervals: Sequence[int] = (500, 10500, 20500, 30500), teacher_batch_size: int | None = None,
                 ema_momentum: float = 0.999, num_classes: int | None = None,
                 class_names: Sequence[str] | None = None) -> None:
        super().__init__(weight)
        where = "model.knowledge land_cover"
        if teacher not in TEACHERS:
            raise ConfigError(f"{where}: teacher {teacher!r} is not one of {', '.join(TEACHERS)}")
        if consistency not in CONSISTENCY_KINDS:
            raise ConfigError(f"{where}: consistency {consistency!r} is not one of {', '.join(CONSISTENCY_KINDS)}")
        check_teacher_options(where, teacher_alpha, teacher_intervals, ema_momentum)
        if num_classes is not None and num_classes < 2:
            raise ConfigError(f"{where}: needs at least 2 land-cover classes, got num_classes={num_classes}")
        if class_names is not None and num_classes is not None and len(class_names) != num_classes:
            raise ConfigError(f"{where}: {len(class_names)} class names for num_classes={num_classes}")
        self.teacher, self.consistency, self.consistency_weight = teacher, consistency, float(consistency_weight)
        self.teacher_alpha, self.teacher_intervals = float(teacher_alpha), tuple(int(i) for i in teacher_intervals)
        self.teacher_batch_size, self.ema_momentum = teacher_batch_size, float(ema_momentum)
        self.num_classes = num_classes
        self.class_names = tuple(class_names) if class_names is not None else None

    def options(self) -> dict[str, Any]:
        return {**super().options(), "teacher": self.teacher, "consistency": self.consistency,
                "consistency_weight": self.consistency_weight, "teacher_alpha": self.teacher_alpha,
                "teacher_intervals": list(self.teacher_intervals), "teacher_batch_size": self.teacher_batch_size,
                "ema_momentum": self.ema_momentum, "num_classes": self.num_classes,
                "class_names": list(self.class_names) if self.class_names else None}

    # -- data --------------------------------------------------------------------------------------------
    def from_data(self, data_kwargs: dict[str, Any]) -> LandCover:
        """The classes of the land-cover product (``class_names``; ``num_classes`` may be the natural images')."""
        if self.num_classes is not None or "class_names" not in data_kwargs:
            return self  # a source without proportions is refused by the run (needs_land_cover), naming it
        names = list(data_kwargs["class_names"])
        return LandCover(**{**self.options(), "num_classes": len(names), "class_names": names})

    # -- model -------------------------------------------------------------------------------------------
    def attach(self, method) -> None:
        self.attach_linear_head(method, self.num_classes, "the land-cover product of data.dataset")
        modules = method.knowledge_modules
        modules["land_cover_views"] = GeoKRViews(
            method.views.image_size, method.mean, method.std, method.views.value_scale,
            rgb_indices(method.band_names, method.backbone.in_chans), GeoKRViewsConfig())
        if self.teacher != "none":
            networks = nn.ModuleDict({"backbone": method.student["backbone"], self.head: method.student[self.head]})
            momentum = ConstantMomentum(self.ema_momentum if self.teacher == "ema" else 1.0)
            modules["land_cover_teacher"] = EMATeacher(networks, momentum)

    def make_views(self, method, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        image = batch["image"]
        if image.ndim != 4:
            raise DataError(f"knowledge term land_cover: needs whole tiles (B, C, H, W), got a batch of shape "
                            f"{tuple(image.shape)} (views cut at decode time)")
        views = method.knowledge_modules["land_cover_views"](image, n_views=1)
        batch[VIEW_KEY] = views[0]  # the teacher sees the same view (in loss); the batch lives for this step only
        return views

    def example_batch(self, method, batch: dict[str, torch.Tensor], generator: torch.Generator | None) -> None:
        batch["label"] = torch.rand(batch["image"].shape[0], self.num_classes, generator=generator).softmax(dim=1)

    def schedule_for(self, global_batch: int) -> SparseMomentum:
        """GeoKR's sparse schedule for a global batch (``teacher_batch_size`` overrides it)."""
        return sparse_schedule(self.teacher_alpha, self.teacher_intervals, self.teacher_batch_size or global_batch)

    def update_teacher(self, method, global_batch: int) -> float:
        """The teacher update due after the optimiser step just done (``global_step`` steps done; 1 = none)."""
        teacher = method.knowledge_modules["land_cover_teacher"]
        if self.teacher == "sparse":
            teacher.schedule = self.schedule_for(global_batch)
        return teacher.update(method.student, int(method.global_step))

    def loss(self, method, features: torch.Tensor, own: Sequence[torch.Tensor],
             batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        targets = batch.get("label")
        if not torch.is_tensor(targets) or targets.ndim != 2 or targets.shape[1] != self.num_classes:
            shape = tuple(targets.shape) if torch.is_tensor(targets) else type(targets).__name__
            raise DataError(f"knowledge term land_cover: needs the land-cover proportions (B, {self.num_classes}) in "
                            f"batch['label'], got {shape}; pretrain on a 'landcover:' dataset")
        logits = method.student[self.head](own[0])
        targets = targets.to(logits.dtype)
        loss = soft_target_cross_entropy(logits, targets)
        dominant = targets.argmax(dim=1)
        logs = {"loss_land_cover": loss.detach(),
                "land_cover_dominant_accuracy": (logits.argmax(dim=1) == dominant).float().mean()}
        if self.teacher != "none":
            world = method.trainer.world_size if method._trainer is not None else 1
            momentum = self.update_teacher(method, int(targets.shape[0]) * int(world))
            teacher = method.knowledge_modules["land_cover_teacher"].module
            with torch.no_grad():
                teacher_logits = teacher[self.head](teacher["backbone"](batch[VIEW_KEY]))
            consistency = geokr_consistency(logits, teacher_logits, self.consistency)
            loss = loss + self.consistency_weight * consistency
            logs.update(loss_land_cover_consistency=consistency.detach(), land_cover_teacher_momentum=momentum)
        return loss, logs
