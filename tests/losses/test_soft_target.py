"""Soft-target CE and GeoKR's consistency term against hand computations and their stated properties."""

import math

import pytest
import torch
from torch.nn import functional as F

from rspretrain.losses.soft_target import geokr_consistency, soft_target_cross_entropy


def test_soft_target_ce_by_hand():
    logits = torch.tensor([[math.log(1.0), math.log(3.0)]])  # p = (0.25, 0.75)
    targets = torch.tensor([[0.5, 0.5]])
    by_hand = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    # official reduction: mean over batch x classes
    assert soft_target_cross_entropy(logits, targets).item() == pytest.approx(by_hand / 2)
    assert soft_target_cross_entropy(logits, targets, "batchmean").item() == pytest.approx(by_hand)
    # one-hot targets give the ordinary cross-entropy
    z = torch.randn(6, 5)
    y = torch.randint(0, 5, (6,))
    assert soft_target_cross_entropy(z, F.one_hot(y, 5).float(), "batchmean").item() == pytest.approx(
        F.cross_entropy(z, y).item(), rel=1e-6)
    # minimised (over logits) by predicting the target distribution: its value is then the target's entropy
    a = torch.tensor([[0.1, 0.6, 0.3]])
    entropy = -(a * a.log()).sum().item()
    assert soft_target_cross_entropy(a.log(), a, "batchmean").item() == pytest.approx(entropy, rel=1e-6)
    assert soft_target_cross_entropy(torch.tensor([[0.0, 2.0, 1.0]]), a, "batchmean").item() > entropy
    with pytest.raises(ValueError):
        soft_target_cross_entropy(torch.zeros(2, 3), torch.zeros(2, 4))


def test_consistency_ce_is_student_weighted_and_only_the_student_gets_gradient():
    torch.manual_seed(0)
    zs = torch.randn(4, 6, requires_grad=True)
    zt = torch.randn(4, 6, requires_grad=True)
    loss = geokr_consistency(zs, zt, "ce")
    expected = -(zs.softmax(1) * zt.log_softmax(1)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert zs.grad is not None and zs.grad.abs().sum() > 0
    assert zt.grad is None  # the teacher side is detached
    # not KL: at agreement the official term is the entropy of the student, not zero
    same = torch.tensor([[0.0, 1.0, 2.0]])
    p = same.softmax(1)
    assert geokr_consistency(same, same, "ce", "batchmean").item() == pytest.approx(-(p * p.log()).sum().item())


def test_consistency_kl_option():
    torch.manual_seed(1)
    zs, zt = torch.randn(5, 4), torch.randn(5, 4)
    kl = geokr_consistency(zs, zt, "kl", "batchmean")
    reference = F.kl_div(zt.log_softmax(1), zs.log_softmax(1), reduction="batchmean", log_target=True)  # KL(p_s||p_t)
    assert kl.item() == pytest.approx(reference.item(), rel=1e-5)
    assert geokr_consistency(zs, zs, "kl").item() == pytest.approx(0.0, abs=1e-7)
    # kl = ce - H(p_s), per sample
    ps = zs.softmax(1)
    h = -(ps * ps.log()).sum(1)
    ce = geokr_consistency(zs, zt, "ce", "none")
    assert torch.allclose(geokr_consistency(zs, zt, "kl", "none"), ce - h, atol=1e-6)
    with pytest.raises(ValueError, match="consistency kind"):
        geokr_consistency(zs, zt, "mse")
