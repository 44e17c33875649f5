"""The inference network of scene classification: backbone, optional dynamic feature fusion, linear classifier.

Plain fine-tuning uses ``SceneClassifier(backbone, num_classes)``: pooled backbone features -> linear layer. SSKDNet
[0] uses the same network with a :class:`~rspretrain.nn.fusion.DynamicFeatureFusion` over several stage maps; its
self-supervised branch is a separate module of the training task and never part of this network, so what is
exported and evaluated is exactly backbone + fusion + classifier.

:meth:`SceneClassifier.forward_train` also returns what SSKDNet's training needs from the same single forward pass:
all stage maps and the map the classifier pools (fused map, or the last stage), from which a class-activation map
[1] is computed.

References:
    - [0] Zhao, Liu, Yang, Wu, "SSKDNet", Remote Sensing 14(19):4813, 2022, https://doi.org/10.3390/rs14194813
    - [1] Zhou et al., "Learning Deep Features for Discriminative Localization" (CAM), CVPR 2016,
      https://arxiv.org/abs/1512.04150
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from rspretrain.core.errors import ConfigError
from rspretrain.nn.backbones import Backbone
from rspretrain.nn.fusion import DynamicFeatureFusion


@dataclass
class ClassifierOutput:
    """What one training forward pass yields.

    Attributes:
        logits: ``(B, K)`` class logits.
        head_map: ``(B, D, h, w)`` map whose global average the classifier sees (fused map, or the last stage).
        stages: every stage map of the backbone (``Backbone.forward_stages`` order).
        fusion_weights: ``(B, stages, D or 1)`` fusion attention weights, or None without fusion.
    """

    logits: torch.Tensor
    head_map: torch.Tensor
    stages: list[torch.Tensor]
    fusion_weights: torch.Tensor | None


class SceneClassifier(nn.Module):
    """Backbone (+ dynamic feature fusion) + linear classifier.

    Args:
        backbone: the feature extractor.
        num_classes: output classes.
        fusion_stages: indices into ``backbone.forward_stages`` fused by a :class:`DynamicFeatureFusion`; None or
            empty: no fusion, the classifier sees the backbone's pooled features.
        fusion_channels: channels of the fused map.
        fusion_weighting: ``"channel"`` or ``"stage"`` (see :class:`DynamicFeatureFusion`).
        fusion_size: ``"finest"`` or ``"coarsest"`` (see :class:`DynamicFeatureFusion`).
        dropout: dropout before the classifier.
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        fusion_stages: Sequence[int] | None = None,
        fusion_channels: int = 256,
        fusion_weighting: str = "channel",
        fusion_size: str = "finest",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"scene classification needs at least 2 classes, got {num_classes}")
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.fusion_stages = tuple(int(i) for i in fusion_stages) if fusion_stages else ()
        info = backbone.feature_info
        bad = [i for i in self.fusion_stages if not -len(info) <= i < len(info)]
        if bad:
            raise ConfigError(f"fusion stages {bad} out of range: {backbone.arch} has {len(info)} stage maps")
        self.fusion = (
            DynamicFeatureFusion(
                [info[i]["num_chs"] for i in self.fusion_stages], fusion_channels, fusion_weighting, size=fusion_size
            )
            if self.fusion_stages
            else None
        )
        width = fusion_channels if self.fusion is not None else backbone.num_features
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(width, num_classes)

    def forward_train(self, x: torch.Tensor) -> ClassifierOutput:
        """Logits plus the intermediate maps SSKDNet's branch and saliency need (one backbone pass)."""
        weights = None
        if self.fusion is not None:
            stages = self.backbone.forward_stages(x)
            head_map, weights = self.fusion([stages[i] for i in self.fusion_stages])
            pooled = head_map.mean(dim=(2, 3))
        else:
            # the backbone's own pooling (== mean of the last map for CNNs), so forward() and this agree for any arch
            pooled, stages = self.backbone.forward_pooled_and_stages(x)
            head_map = stages[-1]
        return ClassifierOutput(self.classifier(self.dropout(pooled)), head_map, stages, weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, K)``."""
        if self.fusion is None:
            return self.classifier(self.dropout(self.backbone(x)))
        return self.forward_train(x).logits

    def class_activation_map(self, head_map: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """CAM [1] of ``classes (B,)``: the classifier's weight vector of each class applied at every position,
        ``(B, h, w)``. Its spatial mean plus the bias is that class's logit (the head is linear after pooling)."""
        w = self.classifier.weight[classes]  # (B, D)
        return torch.einsum("bdhw,bd->bhw", head_map, w)


__all__ = ["ClassifierOutput", "SceneClassifier"]
