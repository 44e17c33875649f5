"""Supervised scene classification by fine-tuning a whole backbone: the plain baseline every variant is compared with.

:class:`SceneClassificationTask` is a LightningModule in torchgeo's shape (``configure_models`` /
``configure_losses`` / ``configure_metrics`` / ``configure_optimizers``) and holds what every scene-classification
task shares:

- the inference network :class:`~rspretrain.nn.scene_classifier.SceneClassifier` (``self.net``), whose backbone
  starts from ``init`` (random, an rspretrain checkpoint or an exported backbone, see
  :mod:`rspretrain.downstream.finetune.backbone_init`);
- batched, on-device augmentation (:class:`~rspretrain.views.finetune_views.SceneClassificationViews`);
- the optimiser and per-step schedule of :func:`rspretrain.core.optim.build_optimizer` (every parameter trains, one lr);
- train accuracy logging and :meth:`predict_logits` for test-set scoring with the inference network only.

Plain fine-tuning minimises the cross-entropy of ``net(x)``; :class:`~rspretrain.downstream.finetune.sskdnet.SSKDNet` overrides
:meth:`loss` to add its branch and distillation.

References:
    - [0] Neumann et al., "In-domain representation learning for remote sensing", 2019,
      https://arxiv.org/abs/1911.06721 (fine-tuning protocols for RS scene classification)
    - [1] torchgeo ``ClassificationTask``, https://github.com/microsoft/torchgeo (task layout)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from rspretrain.core.config import build_dataclass
from rspretrain.downstream.finetune.backbone_init import BackboneInit, choose_arch, resolve_init
from rspretrain.nn.backbones import Backbone
from rspretrain.nn.scene_classifier import SceneClassifier
from rspretrain.training.backbone_module import DATA_DERIVED, BackboneModule
from rspretrain.views.finetune_views import AugmentConfig, SceneClassificationViews

#: Default optimiser of fine-tuning: SGD + momentum, cosine schedule with a short warm-up (our choice; see
#: :mod:`rspretrain.downstream.finetune.run`).
FINETUNE_OPTIM: dict[str, Any] = {
    "name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "no_decay_on_norm_and_bias": True,
    "schedule": "cosine", "warmup_steps": 20,
}  # fmt: skip


class SceneClassificationTask(BackboneModule):
    """Fine-tune a backbone + linear classifier with cross-entropy (inputs, optimiser, logging, checkpoint stamp and
    export metadata from :class:`~rspretrain.training.backbone_module.BackboneModule`).

    Args:
        num_classes: number of scene classes (from the data).
        backbone: timm architecture; None takes the pretrained one from ``init`` (``"resnet18"`` for random).
        init: ``"random"``, a ``.ckpt`` from ``rspretrain pretrain`` or a ``.safetensors`` from ``rspretrain export``.
        in_chans: input bands (from the data).
        band_names: band order of the data (checked against a pretrained ``init``).
        mean, std: per-band standardisation in the [0, 1] range (the driver passes the pretraining statistics for a
            pretrained ``init``, else the training set's).
        value_scale: divisor mapping raw pixels to [0, 1].
        classes: class names (saved with exports).
        image_size: training and test input side in pixels.
        fusion: put a dynamic feature fusion over ``fusion_stages`` before the classifier.
        fusion_stages: backbone stage indices fused (ResNet: 0 stem, 1-4 layer1-4).
        fusion_channels: width of the fused map.
        fusion_weighting: ``"channel"`` or ``"stage"`` attention weights.
        dropout: dropout before the classifier.
        label_smoothing: cross-entropy label smoothing.
        optim: optimiser/schedule settings (:class:`rspretrain.core.optim.OptimConfig`; defaults :data:`FINETUNE_OPTIM`).
        augment: augmentation settings (:class:`rspretrain.views.finetune_views.AugmentConfig`).
    """

    method_name: ClassVar[str] = "finetune"
    export_from: ClassVar[str] = "net"
    default_fusion: ClassVar[bool] = False

    def __init__(
        self,
        num_classes: int,
        backbone: str | None = None,
        init: str = "random",
        in_chans: int = 3,
        band_names: Sequence[str] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        value_scale: float = 255.0,
        classes: Sequence[str] | None = None,
        image_size: int = 64,
        fusion: bool | None = None,
        fusion_stages: Sequence[int] = (2, 3, 4),
        fusion_channels: int = 256,
        fusion_weighting: str = "channel",
        dropout: float = 0.0,
        label_smoothing: float = 0.0,
        optim: dict[str, Any] | None = None,
        augment: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.num_classes = int(num_classes)
        self.classes = list(classes) if classes is not None else None
        self.set_inputs(in_chans, band_names, mean, std, value_scale)
        self.optim_cfg = self.optim_config(optim, FINETUNE_OPTIM)
        self.views = SceneClassificationViews(
            image_size, self.mean, self.std, value_scale, build_dataclass(AugmentConfig, augment or {}, "augment")
        )
        self.use_fusion = self.default_fusion if fusion is None else bool(fusion)
        self.configure_models()
        self.configure_losses()
        self.configure_metrics()

    # -- torchgeo-style lifecycle --------------------------------------------------------------------
    def configure_models(self) -> None:
        """Build ``self.net`` (backbone first, so equal seeds give equal random backbones across tasks)."""
        hp = self.hparams
        self.init_source: BackboneInit = resolve_init(hp.init, self.band_names, hp.in_chans)
        arch = choose_arch(hp.backbone, self.init_source)
        backbone = Backbone(arch, in_chans=hp.in_chans, image_size=hp.image_size,
                            timm_kwargs=self.init_source.timm_kwargs or None)
        if self.init_source.pretrained:
            backbone.model.load_state_dict(self.init_source.state_dict)
            self.init_source.state_dict = None  # the weights now live in the backbone; don't keep a second copy
        self.net = SceneClassifier(
            backbone, self.num_classes, fusion_stages=hp.fusion_stages if self.use_fusion else None,
            fusion_channels=hp.fusion_channels, fusion_weighting=hp.fusion_weighting, dropout=hp.dropout,
        )  # fmt: skip

    def configure_losses(self) -> None:
        self.criterion = nn.CrossEntropyLoss(label_smoothing=self.hparams.label_smoothing)

    def configure_metrics(self) -> None:
        """Training accuracy of the inference network (per step and per epoch); test scores are computed by
        :func:`rspretrain.downstream.report.classification.classification_scores` from :meth:`predict_logits`."""
        from torchmetrics.classification import MulticlassAccuracy

        self.train_accuracy = MulticlassAccuracy(num_classes=self.num_classes, average="micro")

    # -- training ------------------------------------------------------------------------------------
    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """``(total loss, inference-network logits, terms to log)`` of a standardised, augmented batch."""
        logits = self.net(x)
        loss = self.criterion(logits, y)
        return loss, logits, {"loss_ce": loss.detach()}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        with torch.autocast(device_type=self.device.type, enabled=False):  # augmentation in fp32 (see PretrainMethod)
            x = self.views.train_view(batch["image"])
        y = batch["label"].long()
        loss, logits, logs = self.loss(x, y)
        self.log_training_step(loss, logs)
        self.train_accuracy(logits.detach(), y)
        self.log("train/accuracy", self.train_accuracy, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    # -- inference -----------------------------------------------------------------------------------
    @torch.inference_mode()
    def predict_logits(self, dataset, batch_size: int = 256, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of the inference network (``self.net`` only, eval mode) over a scene dataset, and its labels."""
        from tqdm.auto import tqdm

        net = self.net
        was_training = net.training
        net.eval()
        device = next(net.parameters()).device
        logits, labels = [], []
        try:
            n = len(dataset)
            for start in tqdm(range(0, n, batch_size), desc="test", disable=not progress, leave=False):
                batch = dataset.__getitems__(list(range(start, min(start + batch_size, n))))
                logits.append(net(self.views.test_view(batch["image"].to(device))).float().cpu())
                labels.append(torch.as_tensor(batch["label"]).long().cpu())
        finally:
            net.train(was_training)
        return torch.cat(logits), torch.cat(labels)

    # -- export --------------------------------------------------------------------------------------
    def backbone_to_export(self) -> Backbone:
        """The fine-tuned backbone (for :func:`rspretrain.pretrain.export.export_backbone`)."""
        return self.net.backbone

    def input_size(self) -> int:
        return int(self.views.image_size)

    def export_metadata(self) -> dict[str, Any]:
        """The base metadata plus where the backbone started (``init``)."""
        return {**super().export_metadata(), "init": self.init_source.describe()}

    def classifier_metadata(self) -> dict[str, Any]:
        """Everything :func:`rspretrain.pretrain.export.load_scene_classifier` needs to rebuild ``self.net``."""
        hp = self.hparams
        return {
            **self.export_metadata(),
            "kind": "scene_classifier",
            "num_classes": self.num_classes,
            "classes": self.classes,
            "fusion_stages": list(self.net.fusion_stages),
            "fusion_channels": hp.fusion_channels,
            "fusion_weighting": hp.fusion_weighting,
            "dropout": hp.dropout,
        }


__all__ = ["DATA_DERIVED", "FINETUNE_OPTIM", "SceneClassificationTask"]
