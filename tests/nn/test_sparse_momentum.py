"""GeoKR's sparse teacher schedule (METHODS.md §3.4) and its use through EMATeacher."""

import pytest
import torch
from torch import nn

from rspretrain.nn.ema_teacher import EMATeacher, SparseMomentum


def _official_loop(last: int, batch_size: int, intervals=(500, 10500, 20500, 30500)) -> list[int]:
    """The official loop's bookkeeping, transcribed: count iterations from 1, fire when i % period == 1."""
    pending = list(intervals)
    period = int(pending[0] / batch_size * 16)
    fired = []
    for i in range(1, last + 1):
        if i % period == 1:
            fired.append(i)
            if pending:
                period = int(pending.pop(0) / batch_size * 16)
    return fired


def test_fires_at_the_documented_iterations_for_batch_8():
    schedule = SparseMomentum(0.95, batch_size=8)
    assert schedule.update_steps(200_000) == [1, 1001, 21001, 41001, 61001, 122001, 183001]
    assert schedule(1) == schedule(1001) == schedule(21001) == 0.95
    assert schedule(2) == schedule(1000) == schedule(21000) == schedule(61000) == 1.0
    assert schedule(0) == 1.0 and not schedule.fires(-3)
    # ~1.79 M iterations (10 epochs of Levir-KR at batch 8): about 30 updates in the whole run
    assert len(schedule.update_steps(1_790_000)) == 33


@pytest.mark.parametrize("batch_size", [8, 16, 32, 64, 256])
def test_matches_a_transcription_of_the_official_loop(batch_size):
    schedule = SparseMomentum(batch_size=batch_size)
    assert schedule.update_steps(150_000) == _official_loop(150_000, batch_size)
    assert schedule.update_steps(150_000) == [s for s in range(1, 150_001) if schedule.fires(s)]


def test_scaled_by_batch_size_and_custom_intervals():
    assert SparseMomentum(batch_size=64).update_steps(20_000) == [1, 126, 2626, 5126, 7626, 15251]
    short = SparseMomentum(0.9, intervals=(4, 48, 92, 136), batch_size=32)
    assert short.periods == (2, 2, 24, 46, 68)
    assert short.update_steps(250) == [1, 3, 25, 47, 69, 137, 205]
    with pytest.raises(ValueError):
        SparseMomentum(1.5)


def test_ema_teacher_only_moves_when_the_schedule_fires():
    torch.manual_seed(0)
    student = nn.Linear(3, 2)
    teacher = EMATeacher(student, SparseMomentum(0.95, intervals=(8, 8), batch_size=16))  # periods 8: 1, 9, 17
    history = [teacher.module.weight.clone()]
    for step in range(1, 18):
        with torch.no_grad():
            student.weight.add_(1.0)
        before = teacher.module.weight.clone()
        momentum = teacher.update(student, step)
        after = teacher.module.weight
        if step in (1, 9, 17):
            assert momentum == 0.95
            assert torch.allclose(after, 0.95 * before + 0.05 * student.weight)
        else:
            assert momentum == 1.0 and torch.equal(after, before)
        history.append(after.clone())
