"""Heads placed on top of a backbone.

References:
    - [0] MoCo v2, Chen et al. 2020, https://arxiv.org/abs/2003.04297 (2-layer MLP projector)
    - [1] SimCLR, Chen et al. 2020, https://arxiv.org/abs/2002.05709
"""

from __future__ import annotations

from torch import nn


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
