"""Heads placed on top of a backbone.

References:
    - [0] MoCo v2, Chen et al. 2020, https://arxiv.org/abs/2003.04297 (2-layer MLP projector)
    - [1] SimCLR, Chen et al. 2020, https://arxiv.org/abs/2002.05709
    - [2] DINO, Caron et al. 2021, https://arxiv.org/abs/2104.14294 (prototype head)
    - [3] SimMIM, Xie et al. 2022, https://arxiv.org/abs/2111.09886 (linear pixel decoder)
    - [4] CMID, Muhtar et al. 2023, https://arxiv.org/abs/2304.09670
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class ProjectionHead(nn.Sequential):
    """MLP projector: ``num_layers`` linear layers with ReLU (and optional BatchNorm) between.

    MoCo v2 [0] uses ``ProjectionHead(2048, 2048, 128)`` without BatchNorm; GeRSP and CMID use
    the same form (2048-2048-128 and 2048-2048-256). The last layer has no activation.

    Args:
        in_dim: input feature size (the backbone's pooled width).
        hidden_dim: width of the hidden layers.
        out_dim: output embedding size.
        num_layers: number of linear layers (>= 1).
        batch_norm: BatchNorm1d after each hidden linear layer.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, batch_norm: bool = False):
        if num_layers < 1:
            raise ValueError("num_layers must be >= 1")
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(dim, hidden_dim, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim))
        super().__init__(*layers)


class LinearClassifier(nn.Linear):
    """A single linear layer on pooled features (GeRSP's supervised head, probes)."""

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__(in_dim, num_classes)


class DINOHead(nn.Module):
    """DINO prototype head [2]: MLP -> L2-normalised bottleneck -> cosine logits over prototypes.

    ``num_layers`` linear layers (hidden ones followed by optional BatchNorm and GELU) map to a
    ``bottleneck_dim`` embedding, which is L2-normalised and scored against ``num_prototypes``
    weight-normalised prototypes with the norm fixed to 1 (DINO's ``weight_norm`` last layer with
    a frozen gain, written as normalising the rows). CMID [4] applies it to every matched cell of
    the last feature map: C -> 2048 -> 2048 -> 256 -> 2048 prototypes, BatchNorm for ResNets and
    none for Swin. It takes any ``(..., in_dim)`` input: a 1x1 Conv1d over positions, as in the
    official code, is the same map, and its BatchNorm statistics over (batch, positions) are
    those of BatchNorm1d over the flattened rows used here.

    Args:
        in_dim: input feature size.
        hidden_dim: width of the hidden layers.
        bottleneck_dim: size of the normalised embedding.
        num_prototypes: output logits K.
        num_layers: linear layers before the prototypes (>= 1).
        batch_norm: BatchNorm1d after each hidden linear layer.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_prototypes: int = 2048,
        num_layers: int = 3,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError("num_layers must be >= 1")
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(dim, hidden_dim))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.GELU())
            dim = hidden_dim
        layers.append(nn.Linear(dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        self.prototypes = nn.Parameter(torch.empty(num_prototypes, bottleneck_dim))
        nn.init.kaiming_uniform_(self.prototypes, a=math.sqrt(5))  # nn.Linear's default init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(..., num_prototypes)`` for features ``(..., in_dim)``."""
        z = F.normalize(self.mlp(x.reshape(-1, x.shape[-1])), dim=-1)
        logits = z @ F.normalize(self.prototypes, dim=-1).T
        return logits.reshape(*x.shape[:-1], -1)


class PixelShuffleDecoder(nn.Sequential):
    """Linear pixel decoder of SimMIM [3] / CMID [4]: a 1x1 convolution to ``stride**2 * out_chans``
    channels, then PixelShuffle(stride), so each cell of a stride-``stride`` map predicts its own
    ``stride x stride`` block of pixels (CMID: 2048 -> 32*32*3 on the 7x7 map of a 224 px input).

    Args:
        in_dim: channels of the feature map.
        stride: input pixels per cell of the map (the backbone's output stride).
        out_chans: bands to reconstruct.
    """

    def __init__(self, in_dim: int, stride: int = 32, out_chans: int = 3) -> None:
        super().__init__(nn.Conv2d(in_dim, stride * stride * out_chans, kernel_size=1), nn.PixelShuffle(stride))
