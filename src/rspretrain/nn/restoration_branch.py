"""SSKDNet's self-supervised branch: a small conv encoder-decoder that restores a feature map and classifies.

SSKDNet [0] adds a branch that receives the backbone's low-level feature map after background masking and
shuffling, "learns to restore" the original map, and whose class predictions ("dark knowledge") are distilled into
the backbone. The branch architecture is not published; this one is the toolkit's choice (METHODS.md §4.3, step 5,
[proposal]), kept small so it costs a fraction of the backbone:

- encoder: conv3x3 (stride 1) -> conv3x3 (stride 2) -> conv3x3 (stride 2), each + BatchNorm + ReLU, widths
  ``w, 2w, 2w``: a bottleneck at 1/4 of the input map's resolution whose receptive field spans several grid cells,
  so it can reason about where shuffled cells belong;
- decoder: twice (bilinear x2 upsampling, conv3x3 + BatchNorm + ReLU), then a 1x1 conv back to the input channels:
  the restored map, compared with the original by a reconstruction loss;
- classifier: global average pooling of the bottleneck + a linear layer: the branch's logits.

The branch is used only in training; the inference network never calls it (see :mod:`rspretrain.downstream.finetune.sskdnet`).

References:
    - [0] Zhao, Liu, Yang, Wu, "SSKDNet", Remote Sensing 14(19):4813, 2022, https://doi.org/10.3390/rs14194813
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from rspretrain.core.errors import ConfigError


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


class RestorationBranch(nn.Module):
    """Encoder-decoder over a feature map: ``(restored map, class logits)``.

    Args:
        in_channels: channels of the low-level feature map (64 for ResNet-18/50 stems, 64/256 after ``layer1``).
        num_classes: classes of the logits.
        width: base width ``w`` of the encoder and decoder.

    Example:
        >>> branch = RestorationBranch(64, num_classes=21)
        >>> restored, logits = branch(torch.randn(2, 64, 16, 16))
        >>> restored.shape, logits.shape
        (torch.Size([2, 64, 16, 16]), torch.Size([2, 21]))
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 64) -> None:
        super().__init__()
        if width < 1 or in_channels < 1 or num_classes < 1:
            raise ConfigError(f"restoration branch: in_channels {in_channels}, num_classes {num_classes} and "
                              f"width {width} must be >= 1")
        self.encoder = nn.Sequential(
            _conv_bn_relu(in_channels, width), _conv_bn_relu(width, 2 * width, 2), _conv_bn_relu(2 * width, 2 * width, 2)
        )
        self.up1 = _conv_bn_relu(2 * width, width)
        self.up2 = _conv_bn_relu(width, width)
        self.head = nn.Conv2d(width, in_channels, 1)
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = x.shape[-2:]
        z = self.encoder(x)
        logits = self.classifier(z.mean(dim=(2, 3)))
        mid = (-(-size[0] // 2), -(-size[1] // 2))  # ceil: sizes that are not multiples of 4 come back exactly
        y = self.up1(F.interpolate(z, size=mid, mode="bilinear", align_corners=False))
        y = self.up2(F.interpolate(y, size=size, mode="bilinear", align_corners=False))
        return self.head(y), logits


__all__ = ["RestorationBranch"]
