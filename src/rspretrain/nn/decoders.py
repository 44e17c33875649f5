"""Dense-prediction networks over any rspretrain / timm backbone: a feature pyramid, UPerNet, siamese change detection.

- :class:`FeaturePyramid` turns a backbone's stage maps (``forward_intermediates``, see
  :class:`~rspretrain.nn.backbones.Backbone`) into up to four maps of increasing stride (about 4, 8, 16, 32). CNNs and
  hierarchical transformers (ResNet, ConvNeXt, Swin) give such maps directly; the last stage of each stride >= 4 is
  taken. A plain ViT gives one stride for every block: four evenly spaced blocks are taken and rescaled by 4, 2, 1 and
  1/2 with transposed convolutions / max-pooling, the multi-scale adaptor of BEiT and MAE's UPerNet segmentation (H.
  Bao et al., "BEiT", ICLR 2022; K. He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022).
- :class:`UPerNetSegmenter`: UPerNet (T. Xiao et al., "Unified Perceptual Parsing for Scene Understanding", ECCV 2018)
  -- segmentation-models-pytorch's ``UPerNetDecoder`` (PSP on the coarsest map, FPN over the rest, fused at the finest
  stride) -- and a 3x3 classifier, logits upsampled bilinearly to the input size.
- :class:`SiameseChangeDetector`: one encoder with shared weights on both dates, the absolute difference of their
  pyramids level by level, and the same UPerNet decoder on the differences, one change logit per pixel: the
  FC-Siam-diff scheme (R. Caye Daudt, B. Le Saux, A. Boulch, "Fully Convolutional Siamese Networks for Change
  Detection", ICIP 2018) with a pretrained encoder, as BIT / ChangeFormer-style benchmarks judge backbones.

Every model takes raw pixel values and standardises them itself (:class:`InputStandardization`: divide by the value
scale, subtract the per-band mean, divide by the std, as at pretraining), so whole-raster inference can feed file
values directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.decoders.upernet.decoder import UPerNetDecoder
from torch import nn

from rspretrain.core.errors import ConfigError
from rspretrain.nn.backbones import Backbone

__all__ = ["FeaturePyramid", "InputStandardization", "SiameseChangeDetector", "UPerNetSegmenter"]


def _timm_model(backbone: nn.Module) -> nn.Module:
    """The timm model under a :class:`Backbone`, or the module itself (an exported backbone is a timm model)."""
    model = backbone.model if isinstance(backbone, Backbone) else backbone
    if not hasattr(model, "forward_intermediates") or not hasattr(model, "feature_info"):
        raise ConfigError(f"{type(model).__name__}: dense tasks need a timm model with forward_intermediates")
    return model


class InputStandardization(nn.Module):
    """``(x / value_scale - mean) / std`` per band, with the statistics as buffers (they move with the model)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], value_scale: float) -> None:
        super().__init__()
        if len(mean) != len(std) or not len(mean):
            raise ConfigError(f"mean ({len(mean)}) and std ({len(std)}) need one value per band")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * value_scale)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * value_scale)
        self.value_scale = float(value_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.mean.shape[1]:
            raise ConfigError(f"input has {x.shape[1]} bands, the model expects {self.mean.shape[1]}")
        return (x.float() - self.mean) / self.std


class _Rescale(nn.Sequential):
    """Resample a ViT map by 4, 2, 1 or 1/2 (BEiT / MAE multi-scale adaptor); channels shrink with upsampling."""

    def __init__(self, channels: int, factor: float) -> None:
        if factor == 4:
            layers = [nn.ConvTranspose2d(channels, channels // 2, 2, 2), nn.BatchNorm2d(channels // 2), nn.GELU(),
                      nn.ConvTranspose2d(channels // 2, channels // 4, 2, 2)]
            self.out_channels = channels // 4
        elif factor == 2:
            layers, self.out_channels = [nn.ConvTranspose2d(channels, channels // 2, 2, 2)], channels // 2
        elif factor == 1:
            layers, self.out_channels = [nn.Identity()], channels
        elif factor == 0.5:
            layers, self.out_channels = [nn.MaxPool2d(2)], channels
        else:
            raise ValueError(factor)
        super().__init__(*layers)


class FeaturePyramid(nn.Module):
    """Up to four backbone maps of increasing stride, for dense decoders (see the module docstring).

    Args:
        backbone: a :class:`~rspretrain.nn.backbones.Backbone` or a timm model (e.g. from
            :func:`rspretrain.pretrain.export.load_backbone`).
        levels: number of maps (the coarsest ``levels`` strides >= 4).
        freeze: keep the backbone fixed: no gradients, and BatchNorm in eval mode (running statistics) even while
            the decoder trains -- the frozen-feature protocol.
        norm_eval: fine-tune the backbone's weights but keep its BatchNorm layers in eval mode: their running
            statistics stay the pretrained ones and normalise every batch, their affine weights still train
            (mmsegmentation / mmdetection's ``norm_eval``; detectron2's FrozenBatchNorm also fixes the affine part).
            Small fine-tuning batches give noisy batch statistics; ``benchmarks/dense_transfer_diagnosis.py``
            measures what it changes.

    Attributes:
        channels: channels of each map, finest first.
        reductions: stride of each map relative to the input.
        indices: the ``forward_intermediates`` indices used.

    Raises:
        ConfigError: the backbone has no usable stage maps.
    """

    def __init__(self, backbone: nn.Module, levels: int = 4, freeze: bool = False, norm_eval: bool = False) -> None:
        super().__init__()
        self.backbone = _timm_model(backbone)
        info = [dict(i) for i in self.backbone.feature_info]
        reductions = [int(i["reduction"]) for i in info]
        self.rescale: nn.ModuleList | None = None
        if len(info) >= levels and len(set(reductions)) == 1:  # plain ViT: one stride for every block
            self.indices = [round((k + 1) * len(info) / levels) - 1 for k in range(levels)]
            factors = [4, 2, 1, 0.5][-levels:]
            width = int(info[0]["num_chs"])
            self.rescale = nn.ModuleList([_Rescale(width, f) for f in factors])
            self.channels = [m.out_channels for m in self.rescale]
            self.reductions = [int(reductions[0] / f) for f in factors]
        else:
            last_of_stride = {r: i for i, r in enumerate(reductions) if r >= 4}  # last stage of every stride
            chosen = sorted(last_of_stride.values())[-levels:]
            if len(chosen) < 2:
                raise ConfigError(f"{type(self.backbone).__name__}: fewer than two stage maps of stride >= 4 "
                                  f"(strides {reductions})")
            self.indices = chosen
            self.channels = [int(info[i]["num_chs"]) for i in chosen]
            self.reductions = [reductions[i] for i in chosen]
        self.frozen, self.norm_eval = bool(freeze), bool(norm_eval)
        if self.frozen:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> FeaturePyramid:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        elif self.norm_eval:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Maps finest first, ``len(self.channels)`` of them."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            maps = self.backbone.forward_intermediates(x, indices=self.indices, intermediates_only=True)
        if self.rescale is not None:
            maps = [m(f) for m, f in zip(self.rescale, maps)]
        return list(maps)

    def backbone_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.backbone.parameters() if p.requires_grad]

    def adaptor_parameters(self) -> list[nn.Parameter]:
        return list(self.rescale.parameters()) if self.rescale is not None else []


def _upernet(channels: Sequence[int], decoder_channels: int) -> UPerNetDecoder:
    # smp's decoder expects maps for strides [1, 2, 4, 8, ...] and drops the first two; we pass placeholders there.
    if len(channels) < 2:
        raise ConfigError("UPerNet needs at least two feature maps")
    return UPerNetDecoder([0, 0, *channels], encoder_depth=max(3, len(channels) + 1), decoder_channels=decoder_channels)


class UPerNetSegmenter(nn.Module):
    """Semantic segmentation: standardisation, :class:`FeaturePyramid`, UPerNet decoder, per-pixel class logits.

    Args:
        pyramid: the backbone's feature pyramid.
        num_classes: classes to predict.
        mean, std, value_scale: the backbone's input statistics (see :class:`InputStandardization`).
        decoder_channels: width of the UPerNet decoder (mmsegmentation uses 512 for ResNet-50; smaller is cheaper).

    Example:
        >>> seg = UPerNetSegmenter(FeaturePyramid(Backbone("resnet18")), 6, [0.5] * 3, [0.25] * 3, 255.0)
        >>> seg(torch.randint(0, 256, (2, 3, 64, 64))).shape
        torch.Size([2, 6, 64, 64])
    """

    def __init__(
        self,
        pyramid: FeaturePyramid,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
        value_scale: float,
        decoder_channels: int = 128,
    ) -> None:
        super().__init__()
        self.standardize = InputStandardization(mean, std, value_scale)
        self.pyramid = pyramid
        self.decoder = _upernet(pyramid.channels, decoder_channels)
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 3, padding=1)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw pixels ``(B, C, H, W)`` -> logits ``(B, num_classes, H, W)``."""
        maps = self.pyramid(self.standardize(x))
        logits = self.classifier(self.decoder([None, None, *maps]))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters trained at the decoder learning rate (everything but the backbone)."""
        return [*self.pyramid.adaptor_parameters(), *self.decoder.parameters(), *self.classifier.parameters()]


class SiameseChangeDetector(UPerNetSegmenter):
    """Change detection: shared encoder on both dates, ``|pyramid(A) - pyramid(B)|``, UPerNet, one change logit.

    The segmenter's parts with one output channel; only the forward differs. Both dates go through the encoder as
    one batch (so BatchNorm normalises them with the same statistics).

    Args: as :class:`UPerNetSegmenter`, without ``num_classes`` (the output is one logit per pixel).
    """

    def __init__(
        self,
        pyramid: FeaturePyramid,
        mean: Sequence[float],
        std: Sequence[float],
        value_scale: float,
        decoder_channels: int = 128,
    ) -> None:
        super().__init__(pyramid, 1, mean, std, value_scale, decoder_channels)

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """Raw pixels of both dates ``(B, C, H, W)`` -> change logits ``(B, 1, H, W)``."""
        if before.shape != after.shape:
            raise ConfigError(f"dates differ in shape: {tuple(before.shape)} vs {tuple(after.shape)}")
        maps = self.pyramid(self.standardize(torch.cat([before, after])))
        n = before.shape[0]
        differences = [torch.abs(m[:n] - m[n:]) for m in maps]
        logits = self.classifier(self.decoder([None, None, *differences]))
        return F.interpolate(logits, size=before.shape[-2:], mode="bilinear", align_corners=False)


def describe_pyramid(pyramid: FeaturePyramid) -> dict[str, Any]:
    """JSON-ready summary of the maps a decoder sees."""
    return {"indices": list(pyramid.indices), "channels": list(pyramid.channels),
            "reductions": list(pyramid.reductions), "frozen": pyramid.frozen,
            "vit_adaptor": pyramid.rescale is not None}
