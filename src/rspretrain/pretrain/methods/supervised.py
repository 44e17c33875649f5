"""Plain supervised pretraining: backbone + linear classifier, cross-entropy on labeled images.

The "ImageNet-style" initialisation RS methods are measured against: a backbone trained with
labels on natural images (here the CIFAR-10 subset in ``../shared/data``, the one labeled
natural-image set on this machine; ``data.dataset`` takes any labeled source) and then
transferred to RS data. The recipe is the standard supervised one [0]: one view per image with
random-resized-crop + flip (no colour jitter, grey or blur: set in the config's ``views:``),
SGD with momentum, cosine schedule. Exports the backbone; the classifier stays behind.

References:
    - [0] He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, https://arxiv.org/abs/1512.03385
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from rspretrain.core.errors import DataError
from rspretrain.nn.heads import LinearClassifier
from rspretrain.pretrain.methods.base import PretrainMethod
from rspretrain.pretrain.methods.registry import register_method


@register_method
class Supervised(PretrainMethod):
    """Supervised classification pretraining.

    Args:
        num_classes: classes of the labeled source (filled in from the data).
        label_smoothing: cross-entropy label smoothing.
        **kwargs: :class:`PretrainMethod` arguments (backbone, in_chans, image_size, ...).
    """

    method_name = "supervised"
    default_config = "supervised_resnet18_cifar10"
    smoke_overrides: dict = {}  # the CIFAR-10 subset is small (10,000 images of 32 px) and takes no split caps
    #: ``num_classes`` comes from the training source's classes (see ``train.build``).
    trains_on_labels = True
    views_per_image = 1

    def __init__(self, num_classes: int = 10, label_smoothing: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.student["classifier"] = LinearClassifier(self.backbone.num_features, num_classes)
        self.num_classes, self.label_smoothing = num_classes, label_smoothing

    def make_views(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return self.views(batch["image"], n_views=1)

    def example_batch(self, batch_size: int, image_size: int, generator: torch.Generator | None = None) -> dict:
        batch = super().example_batch(batch_size, image_size, generator)
        batch["label"] = torch.randint(0, self.num_classes, (batch_size,), generator=generator)
        return batch

    def loss_from_views(self, views: list[torch.Tensor], batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        labels = batch.get("label")
        if labels is None:
            raise DataError("supervised pretraining needs labeled images: the dataset gave no 'label'")
        if int(labels.max()) >= self.num_classes or int(labels.min()) < 0:
            raise DataError(f"labels outside 0..{self.num_classes - 1} (max {int(labels.max())})")
        features = self.backbone(views[0])
        logits = self.student["classifier"](features)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        accuracy = (logits.argmax(1) == labels).float().mean()
        return loss, {"train_accuracy": accuracy, **self.collapse_monitors(features)}
