"""GeRSP: generic-knowledge-boosted pretraining for RS images [0] (METHODS.md §1), the preset ``moco`` +
``natural_images``.

One student is trained on two tasks at once: MoCo-style contrast on unlabeled RS images (the ``moco`` base) and
supervised classification of labeled natural images (the ``natural_images`` knowledge term,
:mod:`rspretrain.pretrain.knowledge.natural_images`). The student runs ONE forward pass on the concatenation
``[RS query view ; natural view]``, so BatchNorm statistics are shared between the halves, as in the official code.
The EMA teacher (constant m = 0.999, updated before the keys) encodes the second RS view with shuffle-BN; InfoNCE
(tau 0.07) against a queue; a linear classifier on the pooled student feature gives ``L = L_ct + alpha * L_ce``
(alpha = 1, the term's weight). The same run is ``method: moco`` with ``model.knowledge: [{natural_images: {weight:
ALPHA}}]``, ``temperature: 0.07``, ``momentum: 0.999``; this preset keeps GeRSP's name, defaults, configs and
checkpoints (the classifier is the student's ``classifier`` head either way), and its loss on a fixed batch and seed
is today's to the bit (``tests/pretrain/knowledge/test_presets.py``). Its natural source is ``data.natural_dataset``.

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

from collections.abc import Sequence
from typing import Any

from rspretrain.pretrain.methods.moco import MoCoV2
from rspretrain.pretrain.methods.registry import register_method


@register_method
class GeRSP(MoCoV2):
    """GeRSP as a LightningModule (batches carry ``image``, ``natural_image``, ``natural_label``).

    Args:
        num_classes: classes of the natural-image source (set from the data).
        alpha: weight of the supervised cross-entropy (0 gives MoCo with shared BN).
        freeze_key_projector: reproduce the official code's never-updated key projector.
        knowledge: further knowledge terms after GeRSP's ``natural_images``.
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
        knowledge: Sequence[dict[str, Any] | str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(temperature=temperature, momentum=momentum, **kwargs)
        self.save_hyperparameters()
        self.num_classes = num_classes
        self.alpha = alpha
        if freeze_key_projector:
            self.teacher.frozen = ("projector",)
        self.attach_knowledge([self.natural_images_term(alpha, num_classes), *(knowledge or [])])

    @staticmethod
    def natural_images_term(alpha: float = 1.0, num_classes: int | None = None) -> dict[str, Any]:
        """GeRSP's ``natural_images`` term (its source: ``data.natural_dataset``)."""
        return {"natural_images": {"weight": alpha, "num_classes": num_classes}}

    @classmethod
    def knowledge_config(cls, model: dict[str, Any]) -> list[Any]:
        return [cls.natural_images_term(model.get("alpha", 1.0)), *super().knowledge_config(model)]
