import pytest
import torch
from torch import nn

from rspretrain.core.optim import OptimConfig, build_optimizer, lr_multiplier


def test_cosine_with_warmup():
    cfg = OptimConfig(schedule="cosine", warmup_steps=10)
    assert lr_multiplier(cfg, 0, 110) == pytest.approx(0.1)
    assert lr_multiplier(cfg, 9, 110) == pytest.approx(1.0)
    assert lr_multiplier(cfg, 10, 110) == pytest.approx(1.0)
    assert lr_multiplier(cfg, 60, 110) == pytest.approx(0.5)
    assert lr_multiplier(cfg, 110, 110) == pytest.approx(0.0, abs=1e-9)


def test_warmup_from_a_start_ratio_as_cmid():
    cfg = OptimConfig(schedule="cosine", warmup_steps=10, warmup_start_ratio=0.01)
    assert lr_multiplier(cfg, 0, 110) == pytest.approx(0.01)
    assert lr_multiplier(cfg, 5, 110) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_multiplier(cfg, 10, 110) == pytest.approx(1.0)


def test_cosine_restarts_gersp():
    # GeRSP: 5 cycles from 0.007 down to 0.001 (min ratio 1/7), each restarting at the base lr.
    cfg = OptimConfig(schedule="cosine_restarts", restart_cycles=5, min_lr_ratio=1 / 7)
    total = 100
    assert lr_multiplier(cfg, 0, total) == pytest.approx(1.0)
    assert lr_multiplier(cfg, 20, total) == pytest.approx(1.0)  # restart
    assert lr_multiplier(cfg, 19, total) == pytest.approx(1 / 7, abs=0.01)
    assert lr_multiplier(cfg, 10, total) == pytest.approx((1 + 1 / 7) / 2)


def test_step_schedule():
    cfg = OptimConfig(schedule="step", step_gamma=0.9, step_every=100)
    assert lr_multiplier(cfg, 99, 1000) == 1.0
    assert lr_multiplier(cfg, 250, 1000) == pytest.approx(0.81)


@pytest.mark.parametrize("name", ["sgd", "adamw", "adan"])
def test_build_optimizer_with_weight_decay_filter(name):
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    opt, sched = build_optimizer(model, OptimConfig(name=name, lr=0.1, no_decay_on_norm_and_bias=True), 10)
    decays = sorted(g["weight_decay"] for g in opt.param_groups)
    assert decays[0] == 0.0 and decays[-1] > 0
    loss = model(torch.randn(8, 4)).sum()
    loss.backward()
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * lr_multiplier(OptimConfig(), 1, 10))
