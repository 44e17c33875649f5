"""Focal frequency loss (FFL [0]) and its masked-image form (A2MIM [1], CMID [2]).

FFL compares the 2-D Fourier spectra of a prediction and its target, per band, weighting each
frequency by how badly it is matched (a "focal" weight that stops at no gradient):

    F = DFT2(x) (orthonormal);  w = |F_pred - F_target| ** alpha
    w <- log(1 + w) (log_weight);  w <- w / max(w) (over the batch, or per sample and band)
    L = mean( w * |F_pred - F_target|^2 )

CMID's settings: alpha 1, batch-averaged spectra, log weight, batch-wise maximum.

For masked image modelling the prediction's visible region is not learned, so before the DFT
(A2MIM's "mixed" replacement) the visible pixels of the prediction are replaced by
``r = 0.5 * stopgrad(prediction) + 0.5 * target``, keeping a small weight ``u`` (0.001) of the
prediction there:

    M' = M + u (1 - M);  prediction_f = M' * prediction + (1 - M') * r

References:
    - [0] Focal Frequency Loss, Jiang et al. 2021, https://arxiv.org/abs/2012.12821
    - [1] A2MIM, Li et al. 2023, https://arxiv.org/abs/2205.13943
    - [2] CMID, Muhtar et al. 2023, https://arxiv.org/abs/2304.09670
"""

from __future__ import annotations

import torch
from torch import nn


def focal_frequency_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 1.0,
    average_spectrum: bool = True,
    log_weight: bool = True,
    batch_weight: bool = True,
) -> torch.Tensor:
    """FFL between ``(B, C, H, W)`` images (computed in float32, also under autocast).

    Args:
        alpha: exponent of the spectral distance in the focal weight.
        average_spectrum: compare the batch-mean spectra instead of each sample's.
        log_weight: ``log(1 + w)`` on the focal weight.
        batch_weight: normalise the weight by its maximum over the whole batch (else per sample
            and band).
    """
    with torch.autocast(device_type=prediction.device.type, enabled=False):
        f_pred = torch.fft.fft2(prediction.float(), norm="ortho")
        f_target = torch.fft.fft2(target.float(), norm="ortho")
        if average_spectrum:
            f_pred, f_target = f_pred.mean(dim=0, keepdim=True), f_target.mean(dim=0, keepdim=True)
        diff = f_pred - f_target
        distance = diff.real**2 + diff.imag**2
        with torch.no_grad():
            weight = distance.sqrt() ** alpha
            if log_weight:
                weight = torch.log1p(weight)
            top = weight.amax() if batch_weight else weight.amax(dim=(-2, -1), keepdim=True)
            weight = torch.nan_to_num(weight / top, nan=0.0).clamp(0.0, 1.0)  # 0/0 where spectra agree
        return (weight * distance).mean()


def masked_frequency_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    unmasked_weight: float = 0.001,
    **ffl_kwargs,
) -> torch.Tensor:
    """FFL on the "mixed" prediction: visible pixels blended towards the target (see module doc).

    Args:
        prediction, target: ``(B, C, H, W)``.
        mask: ``(B, H, W)`` or ``(B, 1, H, W)``, 1 on masked pixels.
        unmasked_weight: weight ``u`` the prediction keeps on visible pixels.
        **ffl_kwargs: :func:`focal_frequency_loss` options.
    """
    m = mask.to(prediction.dtype)
    if m.ndim == 3:
        m = m.unsqueeze(1)
    m = m + (1 - m) * unmasked_weight
    replacement = 0.5 * prediction.detach() + 0.5 * target
    mixed = m * prediction + (1 - m) * replacement
    return focal_frequency_loss(mixed, target, **ffl_kwargs)


class FocalFrequencyLoss(nn.Module):
    """Module form of :func:`focal_frequency_loss` (CMID's defaults)."""

    def __init__(
        self, alpha: float = 1.0, average_spectrum: bool = True, log_weight: bool = True, batch_weight: bool = True
    ) -> None:
        super().__init__()
        self.kwargs = {
            "alpha": alpha, "average_spectrum": average_spectrum, "log_weight": log_weight, "batch_weight": batch_weight
        }

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_frequency_loss(prediction, target, **self.kwargs)
