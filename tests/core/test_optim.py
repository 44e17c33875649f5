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


def test_sgd_is_plain_momentum_and_nesterov_is_asked_for_by_name():
    # timm's "sgd" is Nesterov's; the papers' (MoCo v2, GeRSP) and torch's is plain momentum.
    model = nn.Linear(4, 4)
    plain, _ = build_optimizer(model, OptimConfig(name="sgd", momentum=0.9), 10)
    nesterov, _ = build_optimizer(model, OptimConfig(name="nesterov", momentum=0.9), 10)
    assert type(plain) is torch.optim.SGD and plain.defaults["nesterov"] is False
    assert plain.defaults["momentum"] == 0.9
    assert type(nesterov) is torch.optim.SGD and nesterov.defaults["nesterov"] is True


def test_plain_momentum_step_matches_torch_sgd():
    torch.manual_seed(0)
    a, b = nn.Linear(4, 2), nn.Linear(4, 2)
    b.load_state_dict(a.state_dict())
    ours, _ = build_optimizer(a, OptimConfig(name="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4), 10)
    reference = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(8, 4)
    for _ in range(3):
        for model, opt in ((a, ours), (b, reference)):
            opt.zero_grad()
            model(x).square().sum().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_cosine_restarts_with_a_period_in_steps():
    cfg = OptimConfig(schedule="cosine_restarts", restart_period_steps=30, min_lr_ratio=0.0)
    assert lr_multiplier(cfg, 30, 100) == pytest.approx(1.0)  # restarts at 30, 60, 90 whatever the run's length
    assert lr_multiplier(cfg, 15, 100) == pytest.approx(0.5)
    assert lr_multiplier(cfg, 90, 100) == pytest.approx(1.0)


def test_lr_scaling_rules():
    assert OptimConfig(lr=1e-3, lr_reference_batch=64, lr_scaling="linear").scaled_lr(256) == pytest.approx(4e-3)
    assert OptimConfig(lr=0.1, lr_reference_batch=256, lr_scaling="sqrt").scaled_lr(1024) == pytest.approx(0.2)
    assert OptimConfig(lr=0.1, lr_reference_batch=256).scaled_lr(1024) == 0.1  # none


@pytest.mark.parametrize(("values", "names"), [
    ({"lr_scaling": "linear"}, "optim.lr_scaling: linear needs optim.lr_reference_batch"),
    ({"lr_scaling": "cubic", "lr_reference_batch": 8}, "optim.lr_scaling: 'cubic'"),
    ({"lr_reference_batch": 0}, "optim.lr_reference_batch must be >= 1"),
    ({"lr": -0.1}, "optim.lr must be > 0"),
    ({"warmup_epochs": -1.0}, "optim.warmup_epochs must be >= 0"),
    ({"restart_period_epochs": 0.0}, "optim.restart_period_epochs must be > 0"),
    ({"schedule": "linear"}, "optim.schedule: 'linear'"),
])
def test_bad_optim_values_name_the_key(values, names):
    from rspretrain.core.errors import ConfigError

    with pytest.raises(ConfigError, match=names):
        OptimConfig(**values)


def test_build_optimizer_refuses_a_recipe_still_in_epochs():
    from rspretrain.core.errors import ConfigError

    with pytest.raises(ConfigError, match="optim.warmup_epochs.*resolve the recipe"):
        build_optimizer(nn.Linear(2, 2), OptimConfig(warmup_epochs=1.0), 10)
