"""Soft-target cross-entropy and GeoKR's mean-teacher consistency term [0].

GeoKR (METHODS.md §3.4; official ``GeoKR/losses/mean_teacher_losses.py``) trains a student on land-cover class
proportions ``a`` (a distribution per image, not a hard label) plus a consistency term towards a slowly moving
teacher that sees the same input:

- knowledge loss ``L_cls = -1/(B N) sum_b sum_c a_bc log softmax(z_s)_bc`` (:func:`soft_target_cross_entropy`);
- consistency ``L_cons = -1/(B N) sum_b sum_c p_s,bc log softmax(z_t)_bc`` with ``p_s = softmax(z_s)``
  (:func:`geokr_consistency`, ``kind="ce"``): a cross-entropy weighted by the *student's* probabilities, the
  gradient flowing through ``p_s`` only (the teacher runs without gradient).

Both are means over batch x classes, as in the official code (so they are the per-sample sums divided by ``N``).
``kind="kl"`` replaces the consistency by ``KL(p_s || p_t) = L_cons - H(p_s)`` with the same reduction: the same
argument roles plus the student-entropy term, so it is zero exactly when student and teacher agree (the official form
is minimised by a student that puts all its mass on the teacher's top class).

References:
    - [0] W. Li, K. Chen, H. Chen, Z. Shi, "Geographical Knowledge-Driven Representation Learning for Remote Sensing
      Images", IEEE TGRS 60, 2022, https://arxiv.org/abs/2107.05276
    - [1] A. Tarvainen, H. Valpola, "Mean teachers are better role models", NeurIPS 2017,
      https://arxiv.org/abs/1703.01780
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

CONSISTENCY_KINDS = ("ce", "kl")


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of ``logits`` ``(B, N)`` against target distributions ``targets`` ``(B, N)`` (rows sum to 1).

    Args:
        logits: unnormalised scores.
        targets: target probabilities (e.g. land-cover proportions).
        reduction: ``"mean"``: over batch x classes, as GeoKR's official loss; ``"batchmean"``: sum over classes,
            mean over the batch (the usual soft-label CE, ``N`` times the former); ``"none"``: per sample ``(B,)``.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must have the same shape")
    per_class = -targets.float() * F.log_softmax(logits.float(), dim=1)  # fp32 under autocast
    return _reduce(per_class, reduction)


def geokr_consistency(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str = "ce", reduction: str = "mean"
) -> torch.Tensor:
    """GeoKR's consistency term between student and teacher logits of the same input (see the module docstring).

    The teacher side is detached here too, so passing logits computed with gradient is safe.

    Args:
        student_logits, teacher_logits: ``(B, N)``.
        kind: ``"ce"``: ``-sum p_s log p_t`` (official); ``"kl"``: ``KL(p_s || p_t)``.
        reduction: as :func:`soft_target_cross_entropy`.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)} logits differ in shape"
        )
    if kind not in CONSISTENCY_KINDS:
        raise ValueError(f"consistency kind must be one of {CONSISTENCY_KINDS}, got {kind!r}")
    log_p_s = F.log_softmax(student_logits.float(), dim=1)  # fp32 under autocast
    p_s = log_p_s.exp()
    log_p_t = F.log_softmax(teacher_logits.detach().float(), dim=1)
    per_class = p_s * (log_p_s - log_p_t) if kind == "kl" else -p_s * log_p_t
    return _reduce(per_class, reduction)


def _reduce(per_class: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_class.mean()
    if reduction == "batchmean":
        return per_class.sum(dim=1).mean()
    if reduction == "none":
        return per_class.sum(dim=1)
    raise ValueError(f"reduction must be 'mean', 'batchmean' or 'none', got {reduction!r}")


__all__ = ["CONSISTENCY_KINDS", "geokr_consistency", "soft_target_cross_entropy"]
