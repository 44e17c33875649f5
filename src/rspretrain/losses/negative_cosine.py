"""BYOL's regression loss [0]: the normalised mean squared error between a prediction and a target projection.

For L2-normalised ``p`` and ``z``: ``||p - z||^2 = 2 - 2 cos(p, z)``, averaged over the batch. The target carries no
gradient (it comes from the EMA network); the symmetric loss of BYOL sums it over both view orders.

References:
    - [0] BYOL, Grill et al. 2020, https://arxiv.org/abs/2006.07733 (Eq. 2)
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def normalized_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of ``2 - 2 cos(prediction_i, target_i)`` over the batch; ``target`` is detached.

    Computed in float32 whatever the autocast dtype: the difference of two numbers near 2 loses its precision
    in bf16 as the views' embeddings align.
    """
    p = F.normalize(prediction.float(), dim=-1)
    z = F.normalize(target.detach().float(), dim=-1)
    return (2.0 - 2.0 * (p * z).sum(dim=-1)).mean()
