"""InfoNCE with a queue of negatives (CPC [0], MoCo [1]).

For a query ``q``, its positive key ``k+`` and negatives ``{k_j}``:

    L = -log( exp(q.k+ / tau) / (exp(q.k+ / tau) + sum_j exp(q.k_j / tau)) )

computed as cross-entropy with the positive at index 0. Inputs are L2-normalised here, so
passing already-normalised tensors is harmless.

References:
    - [0] CPC, van den Oord et al. 2018, https://arxiv.org/abs/1807.03748
    - [1] MoCo, He et al. 2020, https://arxiv.org/abs/1911.05722
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def info_nce(query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean InfoNCE loss.

    Args:
        query: ``(B, D)``.
        positive: ``(B, D)``; row i is the positive of query i (no gradient flows in MoCo).
        negatives: ``(K, D)`` shared by all queries (the memory queue).
        temperature: tau.
    """
    # In fp32 under any autocast: the logits are cosines / tau (up to 1 / 0.07 = 14), where bf16's 8-bit mantissa
    # would round them by up to 0.06, as much as the differences between the hardest negatives.
    with torch.autocast(device_type=query.device.type, enabled=False):
        q = F.normalize(query.float(), dim=1)
        k = F.normalize(positive.float(), dim=1)
        n = F.normalize(negatives.float(), dim=1)
        pos = (q * k).sum(dim=1, keepdim=True)
        neg = q @ n.T
        logits = torch.cat([pos, neg], dim=1) / temperature
        target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        return F.cross_entropy(logits, target)


class InfoNCELoss(nn.Module):
    """Module form of :func:`info_nce` with a fixed temperature (MoCo v2: 0.2; GeRSP: 0.07)."""

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        return info_nce(query, positive, negatives, self.temperature)
