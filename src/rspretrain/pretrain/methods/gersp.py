"""GeRSP: generic-knowledge-boosted pretraining for RS images [0] (METHODS.md §1).

One student is trained on two tasks at once: MoCo-style contrast on unlabeled RS images and
supervised classification of labeled natural images. The student runs ONE forward pass on the
concatenation ``[RS query view ; natural view]``, so BatchNorm statistics are shared between
the halves, as in the official code. The EMA teacher (constant m = 0.999, updated before the
keys) encodes the second RS view with shuffle-BN; InfoNCE (tau 0.07) against a queue; a linear
classifier on the pooled student feature gives ``L = L_ct + alpha * L_ce`` (alpha = 1).

Choices (see the issue note): the key projector IS EMA-updated by default (standard MoCo v2, as
the paper describes); ``freeze_key_projector=True`` reproduces the official code, whose key
projector is a copy of the initial query projector that never changes. The student backbone
is exported. Natural images are normalised with the RS data's statistics (the official code
uses one normalisation, ImageNet's, for both).

References:
    - [0] Huang et al., "Generic Knowledge Boosted Pre-training For Remote Sensing Images",
      IEEE TGRS 2024, https://arxiv.org/abs/2401.04614; code github.com/floatingstarZ/GeRSP
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from rspretrain.losses.info_nce import info_nce
from rspretrain.nn.heads import LinearClassifier
from rspretrain.pretrain.methods.moco import MoCoV2
from rspretrain.pretrain.methods.registry import register_method
from rspretrain.views import functional as VF


@register_method
class GeRSP(MoCoV2):
    """GeRSP as a LightningModule (batches carry ``image``, ``natural_image``, ``natural_label``).

    Args:
        num_classes: classes of the natural-image source (set from the data).
        alpha: weight of the supervised cross-entropy (0 gives MoCo with shared BN).
        freeze_key_projector: reproduce the official code's never-updated key projector.
        **kwargs: :class:`MoCoV2` arguments; GeRSP's defaults are tau 0.07, m 0.999, K 65,536.
    """

    method_name = "gersp"
    default_config = "gersp_resnet18_eurosat"
    smoke_overrides = {**MoCoV2.smoke_overrides, "data.epoch_length": 40}

    def __init__(
        self,
        num_classes: int = 1000,
        alpha: float = 1.0,
        freeze_key_projector: bool = False,
        temperature: float = 0.07,
        momentum: float = 0.999,
        **kwargs: Any,
    ) -> None:
        super().__init__(temperature=temperature, momentum=momentum, **kwargs)
        self.save_hyperparameters()
        self.student["classifier"] = LinearClassifier(self.backbone.num_features, num_classes)
        self.num_classes = num_classes
        self.alpha = alpha
        if freeze_key_projector:
            self.teacher.frozen = ("projector",)

    def make_views(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        v1, v2 = self.views(batch["image"], n_views=2)
        natural = VF.to_float(batch["natural_image"], self.views.value_scale)
        return [v1, v2, self.views.one_view(natural)]

    def example_batch(self, batch_size: int, image_size: int, generator: torch.Generator | None = None) -> dict:
        batch = super().example_batch(batch_size, image_size, generator)
        batch["natural_image"] = super().example_batch(batch_size, image_size, generator)["image"]
        batch["natural_label"] = torch.randint(0, self.num_classes, (batch_size,), generator=generator)
        return batch

    def loss_from_views(self, views: list[torch.Tensor], batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        v1, v2, natural = views
        labels = batch["natural_label"]
        if int(labels.max()) >= self.num_classes:
            raise ValueError(f"natural label {int(labels.max())} out of range for {self.num_classes} classes")
        momentum = self.teacher.update(self.student, self.global_step)
        negatives = self.queue()
        # One forward on [RS query view ; natural view]: BatchNorm sees both halves together.
        pooled = self.student["backbone"](torch.cat([v1, natural], dim=0))
        h_rs, h_nat = pooled[: v1.shape[0]], pooled[v1.shape[0] :]
        q = self.student["projector"](h_rs)
        k = self.key(v2)
        loss_ct = info_nce(q, k, negatives, self.temperature)
        logits = self.student["classifier"](h_nat)
        loss_ce = F.cross_entropy(logits, labels)
        self.queue.enqueue(k)
        loss = loss_ct + self.alpha * loss_ce
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        return loss, {
            "loss_contrastive": loss_ct.detach(),
            "loss_ce": loss_ce.detach(),
            "natural_accuracy": accuracy,
            "momentum": momentum,
            **self.collapse_monitors(q),
        }
