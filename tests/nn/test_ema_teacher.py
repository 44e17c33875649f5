import math

import pytest
import torch
from torch import nn

from rspretrain.nn.ema_teacher import ConstantMomentum, CosineMomentum, EMATeacher


def _student() -> nn.Module:
    torch.manual_seed(0)
    return nn.ModuleDict({"backbone": nn.Linear(4, 3), "projector": nn.Linear(3, 2)})


def _perturb(module: nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p))


def test_momentum_one_leaves_teacher_unchanged():
    student = _student()
    teacher = EMATeacher(student, ConstantMomentum(1.0))
    before = [p.clone() for p in teacher.parameters()]
    _perturb(student)
    teacher.update(student, step=5)
    for a, b in zip(before, teacher.parameters()):
        assert torch.equal(a, b)


def test_momentum_zero_copies_student():
    student = _student()
    teacher = EMATeacher(student, ConstantMomentum(0.0))
    _perturb(student)
    teacher.update(student, step=0)
    for s, t in zip(student.parameters(), teacher.parameters()):
        assert torch.allclose(s, t)


def test_update_is_the_ema_formula():
    student = _student()
    teacher = EMATeacher(student, ConstantMomentum(0.9))
    t0 = [p.clone() for p in teacher.parameters()]
    _perturb(student)
    teacher.update(student, 0)
    for a, s, t in zip(t0, student.parameters(), teacher.parameters()):
        assert torch.allclose(t, 0.9 * a + 0.1 * s, atol=1e-6)


def test_teacher_gets_no_gradient_and_frozen_children_stay():
    student = _student()
    teacher = EMATeacher(student, ConstantMomentum(0.0), frozen=("projector",))
    assert not any(p.requires_grad for p in teacher.parameters())
    frozen_before = teacher.module["projector"].weight.clone()
    _perturb(student)
    teacher.update(student, 0)
    assert torch.equal(teacher.module["projector"].weight, frozen_before)
    assert torch.allclose(teacher.module["backbone"].weight, student["backbone"].weight)


def test_cosine_momentum_endpoints():
    sched = CosineMomentum(0.996, 1.0, total_steps=1000)
    assert sched(0) == pytest.approx(0.996)
    assert sched(1000) == pytest.approx(1.0)
    assert sched(500) == pytest.approx(0.998)
    assert sched(5000) == pytest.approx(1.0)  # clamped past the end
    assert all(sched(i) <= sched(i + 1) for i in range(0, 1000, 50))


def test_constant_momentum_rejects_out_of_range():
    with pytest.raises(ValueError):
        ConstantMomentum(1.5)
    assert ConstantMomentum(0.999)(12345) == 0.999
    assert not math.isnan(0.0)
