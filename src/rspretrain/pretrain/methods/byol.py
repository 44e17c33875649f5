"""BYOL: bootstrap your own latent [0], a baseline without negatives.

An online network (backbone -> projector -> predictor) predicts the target network's projection of the other view;
the target (backbone -> projector) is an EMA of the online one whose momentum rises from ``base_momentum`` (0.996)
to 1 along a half cosine over the run. The loss is the normalised MSE of the prediction against the target,
symmetrised over the two views: ``L = l(q(z1), z2') + l(q(z2), z1')``. Projector and predictor are the paper's MLP
(linear -> BatchNorm -> ReLU -> linear; 4096 hidden, 256 out; scaled to the backbone's width when
``proj_hidden_dim`` is None). The online backbone is exported.

Choices: the paper trains with LARS (lr 0.2 x batch/256, wd 1.5e-6, no LARS adaptation or weight decay on biases
and BN); LARS is not an optimiser of the toolkit, so the configs use SGD (or AdamW via ``optim.name``). The
target is updated before the targets are computed, as the other momentum methods here do (the official code
updates it after the online step; for a momentum that changes by 1e-6 per step the two orders are one step apart).

A base for knowledge terms (``model.knowledge``, :mod:`rspretrain.pretrain.knowledge`): the terms' images get BYOL's
first-view recipe and join view 1 in one online forward; their weighted losses are added to BYOL's.

References:
    - [0] BYOL, Grill et al. 2020, https://arxiv.org/abs/2006.07733
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rspretrain.losses.negative_cosine import normalized_mse
from rspretrain.nn.ema_teacher import CosineMomentum, EMATeacher
from rspretrain.nn.heads import ProjectionHead
from rspretrain.pretrain.methods.base import PretrainMethod
from rspretrain.pretrain.methods.registry import register_method
from rspretrain.views.byol import BYOLViews, BYOLViewsConfig


@register_method
class BYOL(PretrainMethod):
    """BYOL as a LightningModule.

    Args:
        proj_hidden_dim: hidden width of projector and predictor (None = 2x the backbone's width, i.e. 4096
            for ResNet-50 as in the paper).
        proj_out_dim: projection size (256 in the paper).
        base_momentum: the target's EMA momentum at step 0 (0.996); it reaches ``final_momentum`` (1) at the end.
        final_momentum: the momentum at the last step.
        knowledge: knowledge terms, ``[{term: {options}}]`` (or a bare term name) (:mod:`rspretrain.pretrain.knowledge`).
        **kwargs: :class:`PretrainMethod` arguments (backbone, in_chans, image_size, ...).
    """

    method_name = "byol"
    default_config = "byol_resnet18_eurosat"
    smoke_overrides = {"data.max_per_class": 4, "model.proj_hidden_dim": 256}
    views_config_class = BYOLViewsConfig

    def __init__(
        self,
        proj_hidden_dim: int | None = None,
        proj_out_dim: int = 256,
        base_momentum: float = 0.996,
        final_momentum: float = 1.0,
        knowledge: Sequence[dict[str, Any] | str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        width = self.backbone.num_features
        hidden = proj_hidden_dim or 2 * width
        self.student["projector"] = ProjectionHead(width, hidden, proj_out_dim, batch_norm=True)
        # The target copies backbone and projector, made before the predictor exists: BYOL's asymmetry is that the
        # target has no predictor (EMATeacher pairs parameters by name, so the student may own more).
        self.teacher = EMATeacher(self.student, CosineMomentum(base_momentum, final_momentum))
        self.student["predictor"] = ProjectionHead(proj_out_dim, hidden, proj_out_dim, batch_norm=True)
        self.schedule_total_steps = 1  # set from the trainer in configure_optimizers
        self.attach_knowledge(knowledge)

    def build_views(self, image_size, value_scale, rgb) -> BYOLViews:
        return BYOLViews(image_size, self.mean, self.std, value_scale, rgb, self.views_cfg)

    def knowledge_view(self, x: torch.Tensor) -> torch.Tensor:
        """A knowledge term's view: BYOL's first-view recipe (always blurred, never solarised)."""
        return self.views.one_view(x, 0)

    def loss_from_views(self, views: list[torch.Tensor], batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        self.teacher.schedule.total_steps = max(1, int(self.schedule_total_steps))
        momentum = self.teacher.update(self.student, self.global_step)
        online, target = self.student, self.teacher.module
        # One online forward of [view 1 ; the terms' views]: BatchNorm sees both (just view 1 without terms).
        h1, extra = self.shared_forward(online["backbone"], views[0], views[2:])
        z = [online["projector"](h1), online["projector"](online["backbone"](views[1]))]
        with torch.no_grad():
            targets = [target["projector"](target["backbone"](v)) for v in views[:2]]
        loss = normalized_mse(online["predictor"](z[0]), targets[1]) + normalized_mse(online["predictor"](z[1]), targets[0])
        logs = {"momentum": momentum, **self.collapse_monitors(z[0])}
        knowledge, knowledge_logs = self.knowledge_loss(h1, extra, batch)
        if knowledge is not None:
            logs.update(loss_byol=loss.detach(), **knowledge_logs)
            loss = loss + knowledge
        return loss, logs
