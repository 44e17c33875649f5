import math

import pytest
import torch

from rspretrain.losses.dino import DINOLoss, TeacherTemperature


def test_loss_is_cross_entropy_of_centred_sharpened_teacher():
    loss_fn = DINOLoss(5, student_temp=0.1, center_momentum=0.9)
    loss_fn.center.fill_(0.3)
    s, t = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    expected = -(torch.softmax((t - 0.3) / 0.05, -1) * torch.log_softmax(s / 0.1, -1)).sum(-1).mean()
    assert loss_fn(s, t, teacher_temp=0.05).item() == pytest.approx(expected.item(), rel=1e-5)


def test_centre_update_is_an_ema_of_the_mean_teacher_logit():
    loss_fn = DINOLoss(4, center_momentum=0.9)
    t = torch.tensor([[1.0, 2.0, 3.0, 4.0], [3.0, 2.0, 1.0, 0.0]]).view(1, 2, 4)
    loss_fn(torch.zeros(1, 2, 4), t, 0.04)
    assert torch.allclose(loss_fn.center, 0.1 * torch.tensor([[2.0, 2.0, 2.0, 2.0]]))
    for _ in range(200):  # constant input: the centre converges to the batch mean
        loss_fn(torch.zeros(1, 2, 4), t, 0.04)
    assert torch.allclose(loss_fn.center, torch.full((1, 4), 2.0), atol=1e-6)
    loss_fn.eval()
    before = loss_fn.center.clone()
    loss_fn(torch.zeros(1, 2, 4), t + 10, 0.04)
    assert torch.equal(loss_fn.center, before)  # evaluation does not move it
    assert "center" in loss_fn.state_dict()  # saved in checkpoints


def test_gradient_only_reaches_the_student():
    s = torch.randn(3, 6, requires_grad=True)
    t = torch.randn(3, 6, requires_grad=True)
    DINOLoss(6)(s, t, 0.07).backward()
    assert s.grad.abs().sum() > 0 and t.grad is None


def test_uniform_student_gives_log_k():
    assert DINOLoss(2048)(torch.zeros(4, 2048), torch.randn(4, 2048), 0.07).item() == pytest.approx(math.log(2048))


def test_teacher_temperature_warm_up_in_steps():
    sched = TeacherTemperature(0.04, 0.07, 0.25)
    assert sched(0, 800) == pytest.approx(0.04)
    assert sched(100, 800) == pytest.approx(0.055)
    assert sched(200, 800) == pytest.approx(0.07) and sched(799, 800) == pytest.approx(0.07)
    assert TeacherTemperature(0.04, 0.07, 0.0)(0, 800) == 0.07
