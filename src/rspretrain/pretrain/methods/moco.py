"""MoCo v2: momentum contrast with an MLP projector and strong augmentation [0, 1].

The baseline every RS method is compared with. Query = student(view 1), key = EMA
teacher(view 2) computed with shuffle-BN, InfoNCE against a FIFO queue of past keys; the
teacher is updated before the keys are computed, as in the official code.

Defaults are MoCo v2's (tau 0.2, m 0.999, K 65,536, projector 2048-2048-128 scaled to the
backbone width); the CPU configs shrink K and m for short runs on small datasets.

A base for knowledge terms (``model.knowledge``, :mod:`rspretrain.pretrain.knowledge`): the terms' views join the
query view (view 1) in one student forward, their weighted losses are added to InfoNCE; ``gersp`` is this base with
the ``natural_images`` term.

References:
    - [0] MoCo, He et al. 2020, https://arxiv.org/abs/1911.05722
    - [1] MoCo v2, Chen et al. 2020, https://arxiv.org/abs/2003.04297
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rspretrain.losses.info_nce import info_nce
from rspretrain.nn.batch_shuffle import shuffled_forward
from rspretrain.nn.ema_teacher import ConstantMomentum, EMATeacher
from rspretrain.nn.heads import ProjectionHead
from rspretrain.nn.memory_queue import MemoryQueue
from rspretrain.pretrain.methods.base import PretrainMethod
from rspretrain.pretrain.methods.registry import register_method


@register_method
class MoCoV2(PretrainMethod):
    """MoCo v2 as a LightningModule.

    Args:
        proj_hidden_dim: hidden width of the projector (None = the backbone's width, i.e.
            2048-2048-128 for ResNet-50 as in the paper).
        proj_out_dim: embedding size.
        temperature: InfoNCE tau.
        queue_size: number of negatives K.
        momentum: constant EMA momentum m of the key encoder.
        shuffle_bn_groups: on a single device, the number of chunks the key batch is split
            into after shuffling (emulates shuffle-BN over that many GPUs; 1 disables it).
            Under DDP the shuffle is across ranks and this is ignored.
        symmetric: also use view 2 as query and view 1 as key (off in MoCo v2).
        knowledge: knowledge terms, ``[{term: {options}}]`` (or a bare term name) (:mod:`rspretrain.pretrain.knowledge`).
        **kwargs: :class:`PretrainMethod` arguments (backbone, in_chans, image_size, ...).
    """

    method_name = "moco"
    default_config = "moco_resnet18_eurosat"
    smoke_overrides = {"data.max_per_class": 4, "model.queue_size": 32}

    def __init__(
        self,
        proj_hidden_dim: int | None = None,
        proj_out_dim: int = 128,
        temperature: float = 0.2,
        queue_size: int = 65536,
        momentum: float = 0.999,
        shuffle_bn_groups: int = 2,
        symmetric: bool = False,
        knowledge: Sequence[dict[str, Any] | str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        width = self.backbone.num_features
        self.student["projector"] = ProjectionHead(width, proj_hidden_dim or width, proj_out_dim)
        self.teacher = EMATeacher(self.student, ConstantMomentum(momentum))
        self.queue = MemoryQueue(queue_size, proj_out_dim)
        self.temperature = temperature
        self.shuffle_bn_groups = shuffle_bn_groups
        self.symmetric = symmetric
        self.attach_knowledge(knowledge)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.student["projector"](self.student["backbone"](x))

    def key(self, x: torch.Tensor) -> torch.Tensor:
        teacher = self.teacher.module
        return shuffled_forward(lambda v: teacher["projector"](teacher["backbone"](v)), x, self.shuffle_bn_groups)

    def loss_from_views(self, views: list[torch.Tensor], batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """InfoNCE of view 1 against view 2's key (and back if symmetric), plus the knowledge terms on views[2:]."""
        v1, v2 = views[0], views[1]
        momentum = self.teacher.update(self.student, self.global_step)
        negatives = self.queue()
        # One student forward of [view 1 ; the terms' views]: BatchNorm sees both (just view 1 without terms).
        h1, extra = self.shared_forward(self.student["backbone"], v1, views[2:])
        q1 = self.student["projector"](h1)
        k2 = self.key(v2)
        loss = info_nce(q1, k2, negatives, self.temperature)
        keys = [k2]
        if self.symmetric:
            q2, k1 = self.embed(v2), self.key(v1)
            loss = 0.5 * (loss + info_nce(q2, k1, negatives, self.temperature))
            keys.append(k1)
        self.queue.enqueue(*keys)
        logs = {"momentum": momentum, **self.collapse_monitors(q1)}
        knowledge, knowledge_logs = self.knowledge_loss(h1, extra, batch)
        if knowledge is not None:
            logs.update(loss_contrastive=loss.detach(), **knowledge_logs)
            loss = loss + knowledge
        return loss, logs
