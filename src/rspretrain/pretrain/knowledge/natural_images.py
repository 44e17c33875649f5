"""GeRSP's knowledge term: supervised classification of labeled natural images, in the student's shared forward
[0] (METHODS.md §1.4 steps 1, 5, 6).

A batch of labeled natural images (``natural_image``, ``natural_label``: the datamodule pairs the term's source with
the RS source by index modulo their lengths, :class:`~rspretrain.data.pretrain.paired.PairedDataset`) gets one view
each with the base's one-view recipe (MoCo v2's for ``moco``, as GeRSP's official code uses one pipeline for both;
BYOL's first view for ``byol``; CMID's weak view A, crop and flip, for ``cmid``); the views run through the
student backbone in ONE forward with the base's query view (``[RS query ; natural]``, so BatchNorm statistics are
shared, as the official code), and a linear classifier on the pooled natural features gives ``L_ce``
(cross-entropy, no label smoothing). The base adds ``weight * L_ce`` to its own loss (GeRSP: ``L_ct + alpha L_ce``,
alpha = 1).

Choices: natural images are put on the RS source's value scale and normalised with the RS data's statistics (the
official code uses ImageNet's for both); under ``cmid`` the natural half of the shared forward carries an empty mask
(the student sees natural images unmasked: the term is classification, not MIM) and is pooled by averaging the last
map, the global branch's pooling; the classifier is the student's ``classifier`` head (GeRSP's name, so GeRSP
checkpoints load), outside every teacher.

References:
    - [0] Huang et al., "Generic Knowledge Boosted Pre-training For Remote Sensing Images", IEEE TGRS 2024,
      https://arxiv.org/abs/2401.04614; code github.com/floatingstarZ/GeRSP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.nn import functional as F

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.pretrain.knowledge.base import KnowledgeTerm, register_term
from rspretrain.views import functional as VF


@register_term
class NaturalImages(KnowledgeTerm):
    """Supervised natural-image classification (batches carry ``natural_image`` and ``natural_label``).

    Args:
        weight: weight of the cross-entropy (GeRSP's alpha).
        dataset: the labeled natural-image source (a dataset spec: ``cifar10``, ``folder:PATH``, ``shards:DIR``),
            paired with the RS images; None: ``data.natural_dataset``.
        split: its split (with ``dataset``; else ``data.natural_split``).
        num_classes: its classes (set from the data).
    """

    name = "natural_images"
    shared_inputs = 1
    #: The student entry of the classifier (GeRSP's name).
    head = "classifier"

    def __init__(self, weight: float = 1.0, dataset: str | None = None, split: str = "train",
                 num_classes: int | None = None) -> None:
        super().__init__(weight)
        if num_classes is not None and num_classes < 1:
            raise ConfigError(f"model.knowledge natural_images: num_classes must be >= 1, got {num_classes}")
        self.dataset, self.split, self.num_classes = dataset, split, num_classes

    def options(self) -> dict[str, Any]:
        return {**super().options(), "dataset": self.dataset, "split": self.split, "num_classes": self.num_classes}

    def configure_data(self, data: dict[str, Any]) -> None:
        given = data.get("natural_dataset")
        if self.dataset is None and given is None:
            raise ConfigError("knowledge term natural_images has no data source: give model.knowledge "
                              "[{natural_images: {dataset: SPEC}}] (a labeled natural-image set, e.g. cifar10) or "
                              "data.natural_dataset")
        if self.dataset is not None and given is not None and given != self.dataset:
            raise ConfigError(f"knowledge term natural_images: its dataset {self.dataset!r} and data.natural_dataset "
                              f"{given!r} differ; give one")
        if self.dataset is not None:
            data["natural_dataset"], data["natural_split"] = self.dataset, self.split

    def from_data(self, data_kwargs: dict[str, Any]) -> NaturalImages:
        if self.num_classes is None and data_kwargs.get("num_classes") is not None:
            return NaturalImages(self.weight, self.dataset, self.split, int(data_kwargs["num_classes"]))
        return self

    def attach(self, method) -> None:
        self.attach_linear_head(method, self.num_classes, "the term's data source")

    def make_views(self, method, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        if "natural_image" not in batch or "natural_label" not in batch:
            raise DataError("knowledge term natural_images: the batch has no natural_image / natural_label (its "
                            "labeled natural-image source is not paired with the RS images)")
        return [method.knowledge_view(VF.to_float(batch["natural_image"], method.views.value_scale))]

    def example_batch(self, method, batch: dict[str, torch.Tensor], generator: torch.Generator | None) -> None:
        image = batch["image"]
        batch["natural_image"] = torch.randint(0, 256, tuple(image.shape), dtype=torch.uint8, generator=generator)
        batch["natural_label"] = torch.randint(0, self.num_classes, (image.shape[0],), generator=generator)

    def loss(self, method, features: torch.Tensor, own: Sequence[torch.Tensor],
             batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        labels = batch["natural_label"]
        if int(labels.max()) >= self.num_classes or int(labels.min()) < 0:
            raise DataError(f"knowledge term natural_images: natural label {int(labels.max())} out of range for "
                            f"{self.num_classes} classes")
        logits = method.student[self.head](own[0])
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        return loss, {"loss_ce": loss.detach(), "natural_accuracy": accuracy}
