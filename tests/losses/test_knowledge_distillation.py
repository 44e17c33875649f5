import math

import pytest
import torch
from torch.nn import functional as F

from rspretrain.core.errors import ConfigError
from rspretrain.losses.knowledge_distillation import KnowledgeDistillationLoss, kd_kl


def test_zero_when_logits_are_equal_up_to_a_constant():
    z = torch.randn(8, 21)
    assert kd_kl(z, z.clone(), temperature=4.0).abs().item() < 1e-6
    assert kd_kl(z, z + 3.0, temperature=2.0).abs().item() < 1e-5  # softmax is shift-invariant
    assert KnowledgeDistillationLoss(4.0)(z, z).abs().item() < 1e-6


def test_value_is_t_squared_times_kl_of_softened_distributions():
    torch.manual_seed(0)
    s, t = torch.randn(5, 7), torch.randn(5, 7)
    T = 3.0
    p_t = F.softmax(t / T, dim=1)
    expected = T**2 * (p_t * (p_t.log() - F.log_softmax(s / T, dim=1))).sum(dim=1).mean()
    assert torch.allclose(kd_kl(s, t, T), expected, atol=1e-6)
    assert kd_kl(s, t, T) > 0


def test_teacher_is_detached_by_default():
    s = torch.randn(4, 5, requires_grad=True)
    t = torch.randn(4, 5, requires_grad=True)
    kd_kl(s, t).backward()
    assert t.grad is None and s.grad.abs().sum() > 0
    s.grad = None
    kd_kl(s, t, detach_teacher=False).backward()
    assert t.grad.abs().sum() > 0


def test_t_squared_keeps_gradient_scale_comparable_across_temperatures():
    torch.manual_seed(1)
    s = (torch.randn(64, 10) * 0.1).requires_grad_()
    t = torch.randn(64, 10) * 0.1
    norms = []
    for T in (2.0, 8.0):
        s.grad = None
        kd_kl(s, t, T).backward()
        norms.append(s.grad.norm().item())
    # soft-target gradients scale as 1/T^2 (16x smaller at T=8 than at T=2); the T^2 factor cancels that
    assert norms[1] == pytest.approx(norms[0], rel=0.05)
    assert math.isfinite(norms[1])


def test_bad_temperature_is_a_config_error():
    with pytest.raises(ConfigError, match="temperature"):
        kd_kl(torch.zeros(1, 2), torch.zeros(1, 2), temperature=0)
