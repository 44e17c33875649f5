"""CMID: contrastive mask image distillation [0] (METHODS.md §2), for CNN and transformer backbones.

A student sees block-masked versions of a weak view A and a strong view B (mean fill plus a
learnable token added after the ResNet stem / patch embedding); an EMA teacher sees them clean.
Three losses, each weighted (1 by default) and logged on its own:

- **MIM**: a 1x1 conv + PixelShuffle decoder rebuilds each view from the student's last map;
  focal-L1 over the masked pixels plus the focal frequency loss of the "mixed" prediction
  (:mod:`rspretrain.losses.focal_l1`, :mod:`rspretrain.losses.frequency`), averaged over A, B.
- **Global**: MoCo v2 InfoNCE (tau 0.2) between the student's projection of masked A and the
  teacher's of clean B, and vice versa, against a queue; both keys enter the queue in one call,
  so under DDP they are gathered once (the official code enqueues each key once per GPU).
- **Local**: the cells of the last maps are matched by position in the source image (nearest B
  cell per A cell, the 20/49 closest pairs); a DINO prototype head on the student's masked-A
  cells is trained to the centred, sharpened teacher distribution of the matched clean-B cells,
  and vice versa (:mod:`rspretrain.losses.dino`).

The teacher (backbone, projector, prototype head; not the mask token or decoder) follows the
student by EMA with momentum rising 0.996 -> 1 along a cosine, updated after every optimiser
step. A branch whose weight is 0 is not built and costs nothing (ablations). The student
backbone is exported.

Choices where the paper/code leave room (see also the views' and losses' docstrings):

- Schedules stated in epochs are fractions of the run's optimiser steps (``schedule_total_steps``,
  so they also fit time-budgeted runs): the teacher temperature reaches 0.07 at 25 % (50 of 200
  epochs); lr warm-up is ``optim.warmup_steps``.
- Grids follow the input size and the backbone: the last map has ``image_size / output_stride``
  cells per side (7 at 224 px, 2 at 64 px for ResNets and Swin, 4 for ViT-*/16 at 64 px), the
  number of matched pairs scales as 20/49 of its cells (2 of 4 at 64 px), and the mask block is
  1/7 of the image side in whole token cells (:func:`rspretrain.views.block_mask.default_mask_patch_size`).
- The prototype head has BatchNorm for CNNs and none for transformers (as the official ResNet-50
  and Swin-B configs). ViTs (an extension: the official code has ResNet-50 and Swin-B) pool by
  averaging their patch tokens, so the exported backbone's pooled feature is the global
  branch's input (timm ``global_pool="avg", fc_norm=False``, unless set in ``backbone_kwargs``).
- The DINO centre is updated after each direction's loss (twice per step), as the official code.
- Normalisation uses the training data's own per-band mean/std (every rspretrain method does, so
  N-band data works), not the official fixed RGB statistics (0.338, 0.361, 0.335) / (0.136,
  0.135, 0.141) computed on MillionAID.
- The lr warm-up starts at ``optim.warmup_start_ratio`` x lr (0.01 in the CMID configs, as the
  official code). Weight decay is off for norms and biases (``no_decay_on_norm_and_bias``) but
  not for transformers' position embeddings and class token (the spec names norms and biases).
- Under gradient accumulation the queue takes every micro-batch's keys, the EMA runs once per
  optimiser step.

References:
    - [0] Muhtar, Zhang, Xiao, Li, Gu, "CMID: A Unified Self-Supervised Learning Framework for
      Remote Sensing Image Understanding", IEEE TGRS 2023, https://arxiv.org/abs/2304.09670;
      code github.com/NJU-LHRS/official-CMID
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from rspretrain.core.errors import ConfigError
from rspretrain.losses.dino import DINOLoss, TeacherTemperature
from rspretrain.losses.focal_l1 import focal_l1_loss
from rspretrain.losses.frequency import masked_frequency_loss
from rspretrain.losses.info_nce import info_nce
from rspretrain.nn.backbones import MaskToken, is_transformer
from rspretrain.nn.ema_teacher import CosineMomentum, EMATeacher
from rspretrain.nn.heads import DINOHead, PixelShuffleDecoder, ProjectionHead
from rspretrain.nn.memory_queue import MemoryQueue
from rspretrain.nn.position_matching import default_num_matches, gather_cells, position_match
from rspretrain.pretrain.methods.base import PretrainMethod
from rspretrain.pretrain.methods.registry import register_method
from rspretrain.views import functional as VF
from rspretrain.views.block_mask import default_mask_patch_size, upsample_mask
from rspretrain.views.cmid import CMIDViewPair, CMIDViews, CMIDViewsConfig

#: timm families with a class token, pooled by averaging their patch tokens under CMID.
_TOKEN_POOLED = ("vit_", "deit")


#: ``model.cell_matching``: the paper's geometric pairing (default) or the released code's.
CELL_MATCHINGS = ("geometric", "official")


@register_method
class CMID(PretrainMethod):
    """CMID as a LightningModule (any timm ResNet, Swin or ViT backbone).

    Args:
        mim_weight, global_weight, local_weight: weights of the three losses (0 skips a branch).
        proj_hidden_dim, proj_out_dim: global projector C -> 2048 -> 256 (no BatchNorm).
        temperature: InfoNCE tau of the global branch.
        queue_size: negatives K of the global branch.
        local_hidden_dim, local_bottleneck_dim, num_prototypes: DINO head C -> 2048 -> 2048 -> 256
            -> 2048 prototypes.
        local_batch_norm: BatchNorm in the DINO head (None: for CNNs only).
        num_matches: position-matched pairs per direction (None: 20/49 of the last map's cells).
        student_temp: tau_s of the local loss.
        warmup_teacher_temp, teacher_temp, teacher_temp_warmup_fraction: tau_t rises linearly
            from the first to the second over that fraction of the run's steps.
        teacher_temp_warmup_epochs: the same ramp in epochs of the data (the official 50; None: the fraction);
            needs the epoch length the run's recipe resolves (``steps_per_epoch``).
        cell_matching: how the local loss pairs cells: ``geometric`` (by where the crops lie in the source, the
            paper's intent) or ``official`` (as the released code, which grids every crop as if it began at the
            source's top-left corner, METHODS.md CMID §(c); it reproduces the published numbers' pairing).
        center_momentum: momentum of the DINO centre.
        base_momentum, final_momentum: the teacher's cosine EMA schedule.
        focal_alpha, focal_gamma: focal-L1 modulation.
        fft_weight: weight of the focal frequency loss inside the MIM loss.
        fft_unmasked_weight: weight the prediction keeps on visible pixels in the FFL's mixed input.
        replace_mask_token: replace masked stem features by the token (SimMIM) instead of adding it.
        knowledge: knowledge terms, ``[{term: {options}}]`` (or a bare term name) (:mod:`rspretrain.pretrain.knowledge`).
        **kwargs: :class:`PretrainMethod` arguments (backbone, in_chans, image_size, ...).
    """

    method_name = "cmid"
    default_config = "cmid_resnet18_eurosat"
    smoke_overrides = {
        "data.max_per_class": 4, "model.queue_size": 32, "model.num_prototypes": 256, "model.proj_hidden_dim": 256,
        "model.local_hidden_dim": 256,
    }
    views_config_class = CMIDViewsConfig

    def __init__(
        self,
        mim_weight: float = 1.0,
        global_weight: float = 1.0,
        local_weight: float = 1.0,
        proj_hidden_dim: int = 2048,
        proj_out_dim: int = 256,
        temperature: float = 0.2,
        queue_size: int = 65536,
        local_hidden_dim: int = 2048,
        local_bottleneck_dim: int = 256,
        num_prototypes: int = 2048,
        local_batch_norm: bool | None = None,
        num_matches: int | None = None,
        student_temp: float = 0.1,
        warmup_teacher_temp: float = 0.04,
        teacher_temp: float = 0.07,
        teacher_temp_warmup_fraction: float = 0.25,
        teacher_temp_warmup_epochs: float | None = None,
        cell_matching: str = "geometric",
        center_momentum: float = 0.9,
        base_momentum: float = 0.996,
        final_momentum: float = 1.0,
        focal_alpha: float = 0.2,
        focal_gamma: float = 1.0,
        fft_weight: float = 1.0,
        fft_unmasked_weight: float = 0.001,
        replace_mask_token: bool = False,
        knowledge: Sequence[dict[str, Any] | str] | None = None,
        **kwargs: Any,
    ) -> None:
        arch = kwargs.get("backbone", "resnet18")
        if arch.startswith(_TOKEN_POOLED):
            kwargs["backbone_kwargs"] = {"global_pool": "avg", "fc_norm": False, **(kwargs.get("backbone_kwargs") or {})}
        if cell_matching not in CELL_MATCHINGS:
            raise ConfigError(f"model.cell_matching: {cell_matching!r} is not one of {', '.join(CELL_MATCHINGS)}")
        if teacher_temp_warmup_epochs is not None and teacher_temp_warmup_epochs < 0:
            raise ConfigError(f"model.teacher_temp_warmup_epochs must be >= 0, got {teacher_temp_warmup_epochs}")
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.views.cell_matching = cell_matching
        self.teacher_temp_warmup_epochs = teacher_temp_warmup_epochs
        weights = {"mim_weight": mim_weight, "global_weight": global_weight, "local_weight": local_weight}
        for key, value in weights.items():
            if value < 0:
                raise ConfigError(f"model.{key}: {value} is negative")
        if not any(weights.values()):
            raise ConfigError("model.mim_weight, global_weight and local_weight are all 0: nothing to train")
        self.mim_weight, self.global_weight, self.local_weight = mim_weight, global_weight, local_weight
        bb = self.backbone
        width = bb.num_features
        self.student["mask_token"] = MaskToken(bb.token_channels, replace=replace_mask_token)
        teacher_parts = ["backbone"]
        if mim_weight > 0:
            self.student["decoder"] = PixelShuffleDecoder(width, bb.output_stride, bb.in_chans)
        if global_weight > 0:
            self.student["projector"] = ProjectionHead(width, proj_hidden_dim, proj_out_dim)
            self.queue = MemoryQueue(queue_size, proj_out_dim)
            teacher_parts.append("projector")
        if local_weight > 0:
            batch_norm = not is_transformer(bb.arch) if local_batch_norm is None else local_batch_norm
            self.student["local_head"] = DINOHead(
                width, local_hidden_dim, local_bottleneck_dim, num_prototypes, num_layers=3, batch_norm=batch_norm
            )
            self.local_loss = DINOLoss(num_prototypes, student_temp, center_momentum)
            teacher_parts.append("local_head")
        # The teacher copies only what it runs: no mask token (it sees clean views), no decoder.
        self.teacher = EMATeacher(
            nn.ModuleDict({name: self.student[name] for name in teacher_parts}),
            CosineMomentum(base_momentum, final_momentum),
        )
        self.teacher_temperature = TeacherTemperature(warmup_teacher_temp, teacher_temp, teacher_temp_warmup_fraction)
        cells = self.views.feature_grid**2
        if num_matches is not None and num_matches < 1:
            raise ConfigError(f"model.num_matches must be >= 1 (or null for 20/49 of the cells), got {num_matches}")
        self.num_matches = min(num_matches, cells) if num_matches else default_num_matches(cells)
        self.temperature = temperature
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.fft_weight, self.fft_unmasked_weight = fft_weight, fft_unmasked_weight
        self.schedule_total_steps = 1  # set from the trainer in configure_optimizers
        self.attach_knowledge(knowledge)

    def build_views(self, image_size: int, value_scale: float, rgb: Sequence[int] | None) -> CMIDViews:
        bb = self.backbone
        if image_size % bb.output_stride:
            raise ConfigError(
                f"model.image_size: {image_size} px is not a multiple of {bb.arch}'s output stride {bb.output_stride}"
            )
        patch = self.views_cfg.mask_patch_size or default_mask_patch_size(image_size, bb.token_stride)
        if patch % bb.token_stride:
            raise ConfigError(
                f"views.mask_patch_size: {patch} px is not a multiple of {bb.arch}'s {bb.token_stride} px token grid"
            )
        return CMIDViews(
            image_size, self.mean, self.std, value_scale, rgb, self.views_cfg, patch, image_size // bb.output_stride
        )

    # -- steps -------------------------------------------------------------------------------------
    def make_views(self, batch: dict[str, torch.Tensor]) -> CMIDViewPair:
        views = self.views(batch["image"], boxes=batch.get("crop_boxes"))
        return views._replace(knowledge=tuple(self.knowledge_views(batch))) if self.knowledge else views

    def knowledge_view(self, x: torch.Tensor) -> torch.Tensor:
        """A knowledge term's view: view A's weak recipe (random-resized crop and flip, standardised; no mask)."""
        with torch.no_grad():
            crops, _, _ = self.views.resized_crop(x, 0)
            return VF.normalize(crops, self.views.mean, self.views.std)

    def current_teacher_temperature(self) -> float:
        total = max(1, int(self.schedule_total_steps))
        if self.teacher_temp_warmup_epochs is not None:
            if not self.steps_per_epoch:
                raise ConfigError("model.teacher_temp_warmup_epochs: the epoch length is unknown (a run whose recipe "
                                  "was not resolved); give model.teacher_temp_warmup_fraction instead")
            self.teacher_temperature.warmup_fraction = self.teacher_temp_warmup_epochs * self.steps_per_epoch / total
        return self.teacher_temperature(self.global_step, total)

    def loss_from_views(self, views: CMIDViewPair, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        v = views
        backbone, token = self.student["backbone"], self.student["mask_token"]

        def masked_forward(x: torch.Tensor) -> torch.Tensor:
            # The terms' views (after masked view A, if any) carry an empty mask: they are seen whole.
            extra = x.shape[0] - v.mask_a.shape[0]
            mask = torch.cat([v.mask_a, v.mask_a.new_zeros((extra, *v.mask_a.shape[1:]))]) if extra else v.mask_a
            return backbone.forward_last_map(x, mask, token)

        # One student forward of [masked A ; the terms' views]: BatchNorm sees both (just masked A without terms).
        student_a, extra_maps = self.shared_forward(masked_forward, v.masked_a, v.knowledge)
        student_b = backbone.forward_last_map(v.masked_b, v.mask_b, token)
        if student_a.shape[-1] != self.views.feature_grid:
            raise ValueError(f"last map is {tuple(student_a.shape[-2:])}, views expect {self.views.feature_grid} cells")
        teacher = self.teacher.module
        with torch.no_grad():
            teacher_a = teacher["backbone"].forward_last_map(v.view_a)
            teacher_b = teacher["backbone"].forward_last_map(v.view_b)
        loss = student_a.new_zeros(())
        # The momentum the teacher update after this step will use.
        self.teacher.schedule.total_steps = max(1, int(self.schedule_total_steps))
        logs: dict[str, Any] = {"momentum": self.teacher.schedule(self.global_step)}
        monitored = student_a.mean(dim=(2, 3))

        if self.mim_weight > 0:
            spatial_a, frequency_a = self.mim_terms(student_a, v.view_a, v.mask_a)
            spatial_b, frequency_b = self.mim_terms(student_b, v.view_b, v.mask_b)
            spatial, frequency = 0.5 * (spatial_a + spatial_b), 0.5 * (frequency_a + frequency_b)
            loss_mim = spatial + self.fft_weight * frequency
            loss = loss + self.mim_weight * loss_mim
            logs.update(loss_mim=loss_mim.detach(), loss_mim_spatial=spatial.detach(),
                        loss_mim_frequency=frequency.detach())

        if self.global_weight > 0:
            projector = self.student["projector"]
            query_a, query_b = projector(student_a.mean(dim=(2, 3))), projector(student_b.mean(dim=(2, 3)))
            with torch.no_grad():
                key_a = teacher["projector"](teacher_a.mean(dim=(2, 3)))
                key_b = teacher["projector"](teacher_b.mean(dim=(2, 3)))
            negatives = self.queue()
            loss_global = 0.5 * (
                info_nce(query_a, key_b, negatives, self.temperature)
                + info_nce(query_b, key_a, negatives, self.temperature)
            )
            self.queue.enqueue(key_b, key_a)  # one call: one all-gather, each key once
            loss = loss + self.global_weight * loss_global
            logs["loss_global"] = loss_global.detach()
            monitored = query_a

        if self.local_weight > 0:
            teacher_temp = self.current_teacher_temperature()
            loss_local = 0.5 * (
                self.local_term(student_a, teacher_b, v.centres_a, v.centres_b, teacher_temp)
                + self.local_term(student_b, teacher_a, v.centres_b, v.centres_a, teacher_temp)
            )
            loss = loss + self.local_weight * loss_local
            logs.update(loss_local=loss_local.detach(), teacher_temp=teacher_temp)

        knowledge, knowledge_logs = self.knowledge_loss(
            student_a.mean(dim=(2, 3)), [m.mean(dim=(2, 3)) for m in extra_maps], batch
        )
        if knowledge is not None:
            logs.update(loss_cmid=loss.detach(), **knowledge_logs)
            loss = loss + knowledge
        return loss, {**logs, **self.collapse_monitors(monitored)}

    def mim_terms(
        self, features: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(focal-L1 over masked pixels, focal frequency loss of the mixed prediction) of one view."""
        reconstruction = self.student["decoder"](features)
        pixel_mask = upsample_mask(mask, self.views.masker.mask_patch_size)
        spatial = focal_l1_loss(reconstruction, target, pixel_mask, self.focal_alpha, self.focal_gamma)
        if self.fft_weight <= 0:
            return spatial, spatial.new_zeros(())
        return spatial, masked_frequency_loss(reconstruction, target, pixel_mask, self.fft_unmasked_weight)

    def local_term(
        self,
        student_map: torch.Tensor,
        teacher_map: torch.Tensor,
        student_centres: torch.Tensor,
        teacher_centres: torch.Tensor,
        teacher_temp: float,
    ) -> torch.Tensor:
        """DINO loss between the student's cells and the teacher's cells matched to them by position."""
        index_s, index_t, _ = position_match(student_centres, teacher_centres, self.num_matches)
        student_cells = gather_cells(student_map.flatten(2).transpose(1, 2), index_s)
        with torch.no_grad():
            teacher_cells = gather_cells(teacher_map.flatten(2).transpose(1, 2), index_t)
            teacher_logits = self.teacher.module["local_head"](teacher_cells)
        return self.local_loss(self.student["local_head"](student_cells), teacher_logits, teacher_temp)

    # -- teacher -----------------------------------------------------------------------------------
    def update_teacher(self, step: int) -> float:
        """EMA step of the teacher with the cosine momentum of ``step`` of the run's steps."""
        self.teacher.schedule.total_steps = max(1, int(self.schedule_total_steps))
        return self.teacher.update(self.student, step)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # After the optimiser step, as in the official code, with the momentum of the 0-based iteration
        # just done: Lightning counts the step as completed only after this hook returns, so
        # global_step is that index here. Here rather than in on_train_batch_end, which Lightning runs
        # after the checkpoint callback, so a checkpoint written at this step holds the updated
        # teacher (exact resume).
        self.update_teacher(self.global_step)
