"""Backbone factory over timm.

Every backbone is a timm model created with ``num_classes=0`` (so calling it returns pooled
features) and any ``in_chans``. :class:`Backbone` adds the two things every method needs on top
of timm's uniform contract: pooled features and a list of stage feature maps, both in NCHW.
The wrapped timm model is kept as ``.model`` so its ``state_dict`` keys are timm's own and an
exported backbone loads back with ``timm.create_model(arch)`` directly.

References:
    - [0] timm, R. Wightman, https://github.com/huggingface/pytorch-image-models
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import timm
import torch
from torch import nn

from rspretrain.errors import ConfigError

#: Architectures the toolkit is tested with; any other timm name also works.
TESTED_BACKBONES = ("resnet18", "resnet50", "vit_small_patch16_224", "swin_tiny_patch4_window7_224")


def is_transformer(arch: str) -> bool:
    """True for timm transformer families whose position embeddings depend on ``img_size``."""
    return arch.startswith(("vit_", "swin", "deit", "beit", "eva"))


def timm_kwargs_for(arch: str, image_size: int | None) -> dict[str, Any]:
    """Extra timm constructor kwargs an architecture needs at a given input size.

    Transformers are built at the training resolution (``img_size``) so that their position
    embeddings and windows match the input; CNNs need nothing.
    """
    if image_size is not None and is_transformer(arch):
        return {"img_size": int(image_size)}
    return {}


class Backbone(nn.Module):
    """A timm backbone with pooled features and stage maps.

    Args:
        arch: timm model name, e.g. ``"resnet18"``, ``"swin_tiny_patch4_window7_224"``.
        in_chans: number of input bands.
        image_size: training input size; transformers are built for it.
        timm_kwargs: further kwargs for ``timm.create_model`` (e.g. ``drop_path_rate``).

    Example:
        >>> bb = Backbone("resnet18", in_chans=4)
        >>> bb(torch.randn(2, 4, 64, 64)).shape
        torch.Size([2, 512])
    """

    def __init__(
        self,
        arch: str = "resnet18",
        in_chans: int = 3,
        image_size: int | None = None,
        timm_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        kwargs = {**timm_kwargs_for(arch, image_size), **(timm_kwargs or {})}
        try:
            self.model = timm.create_model(arch, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)
        except RuntimeError as err:  # timm raises RuntimeError for unknown names
            raise ConfigError(f"backbone {arch!r}: {err}") from None
        self.arch = arch
        self.in_chans = in_chans
        self.image_size = image_size
        self.timm_kwargs = kwargs
        self.num_features: int = self.model.num_features

    @property
    def feature_info(self) -> list[dict[str, Any]]:
        """Channels and reduction of each stage map returned by :meth:`forward_stages`."""
        return [dict(info) for info in self.model.feature_info]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, num_features)``."""
        return self.model(x)

    def forward_stages(self, x: torch.Tensor, indices: int | Sequence[int] | None = None) -> list[torch.Tensor]:
        """Stage feature maps in NCHW (timm's ``forward_intermediates``).

        For ResNets the list is [stem, layer1, layer2, layer3, layer4]; for Swin one map per
        stage; for ViT one map per block.
        """
        return self.model.forward_intermediates(x, indices=indices, intermediates_only=True)

    def forward_pooled_and_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Pooled features and all stage maps in one pass (no second forward)."""
        final, stages = self.model.forward_intermediates(x)
        return self.model.forward_head(final, pre_logits=True), stages


def create_backbone(arch: str, in_chans: int = 3, image_size: int | None = None, **timm_kwargs: Any) -> Backbone:
    """Factory: a :class:`Backbone` for any timm architecture name."""
    return Backbone(arch, in_chans=in_chans, image_size=image_size, timm_kwargs=timm_kwargs or None)
