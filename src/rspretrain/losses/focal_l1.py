"""Focal L1 regression loss (A2MIM [0], used for CMID's pixel reconstruction [1]).

With ``d = |prediction - target|``:

    l(d) = d * (2 * sigmoid(alpha * d) - 1) ** gamma

Small errors are down-weighted (the factor tends to 0 as d -> 0 and to 1 for large d), so the
loss concentrates on the badly reconstructed pixels. CMID: alpha 0.2, gamma 1, averaged over the
masked pixels and bands only (unmasked pixels weigh 0).

References:
    - [0] A2MIM, Li et al. 2023, https://arxiv.org/abs/2205.13943
    - [1] CMID, Muhtar et al. 2023, https://arxiv.org/abs/2304.09670
"""

from __future__ import annotations

import torch


def focal_l1_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    alpha: float = 0.2,
    gamma: float = 1.0,
) -> torch.Tensor:
    """Mean focal L1 over all entries, or over the masked pixels of every band.

    Args:
        prediction, target: ``(B, C, H, W)``.
        mask: ``(B, H, W)`` or ``(B, 1, H, W)``, 1 where the loss counts (CMID: masked pixels).
        alpha, gamma: the modulating factor's scale and exponent.

    Returns:
        ``sum(l * mask) / (C * sum(mask))`` (0 when nothing is masked), or ``mean(l)``.
    """
    d = (prediction.float() - target.float()).abs()  # fp32 under autocast: pixel errors are small differences
    loss = d * (2 * torch.sigmoid(alpha * d) - 1) ** gamma
    if mask is None:
        return loss.mean()
    m = mask.to(loss.dtype)
    if m.ndim == 3:
        m = m.unsqueeze(1)
    return (loss * m).sum() / (m.sum() * loss.shape[1]).clamp_min(1.0)
