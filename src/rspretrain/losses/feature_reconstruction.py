"""Feature-reconstruction losses: how far a predicted feature map is from a target feature map.

SSKDNet [0] trains its branch to restore the backbone's low-level feature map; the loss is not published, so the
kind is a knob (METHODS.md §4.3, step 5, [proposal]): ``"mse"`` (default), ``"l1"``, or ``"cosine"`` (1 - cosine
similarity of the channel vectors at each position, invariant to the feature scale). The target is always detached
here: the backbone's map is the supervision signal, and letting the loss pull the target towards the prediction
would allow the trivial solution of a constant feature map.

References:
    - [0] Zhao, Liu, Yang, Wu, "SSKDNet", Remote Sensing 14(19):4813, 2022, https://doi.org/10.3390/rs14194813
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from rspretrain.core.errors import ConfigError

#: Accepted ``kind`` values of :func:`feature_reconstruction`.
RECONSTRUCTION_LOSSES = ("mse", "l1", "cosine")


def feature_reconstruction(prediction: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Mean reconstruction error between ``prediction`` and the stop-gradient ``target`` (both ``(B, C, H, W)``)."""
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
    prediction, target = prediction.float(), target.detach().float()  # fp32 under autocast (small differences)
    if kind == "mse":
        return F.mse_loss(prediction, target)
    if kind == "l1":
        return F.l1_loss(prediction, target)
    if kind == "cosine":
        return (1 - F.cosine_similarity(prediction, target, dim=1, eps=1e-6)).mean()
    raise ConfigError(f"feature reconstruction loss {kind!r} is not one of {', '.join(RECONSTRUCTION_LOSSES)}")


__all__ = ["RECONSTRUCTION_LOSSES", "feature_reconstruction"]
