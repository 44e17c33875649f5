import csv
import time

from rspretrain.pretrain.config import load_config
from rspretrain.pretrain.run import load_checkpoint, pretrain


def test_budget_fits_steps_and_finishes_the_schedule(tmp_path, data_root):
    cfg = load_config("moco_resnet18_eurosat", {
        "data.root": str(data_root), "data.max_per_class": 10, "data.batch_size": 16,
        "model.image_size": 32, "model.queue_size": 32,
        "optim.warmup_steps": 0, "trainer.max_steps": 100000, "trainer.budget_minutes": 0.25,
        # process CPU time: another process loading the machine must not eat the 15 s before the fit (it did once)
        "trainer.budget_clock": "cpu",
        "trainer.log_every_n_steps": 1, "trainer.progress_bar": False, "trainer.out_dir": str(tmp_path / "run"),
    })
    start = time.perf_counter()
    final = pretrain(cfg)
    elapsed = time.perf_counter() - start
    steps = load_checkpoint(final)["global_step"]
    assert 15 < steps < 100000
    assert elapsed < 0.25 * 60 * 1.1 + 30 + 40  # budget + hard-stop margin + set-up and saving
    with open(tmp_path / "run" / "logs" / "metrics.csv") as f:
        lrs = [float(r["train/lr"]) for r in csv.DictReader(f) if r.get("train/lr")]
    # the cosine schedule was fitted to the budget: it ends near zero, not cut off at its start
    assert lrs[0] > 0.9 * cfg.optim.lr and lrs[-1] < 0.2 * cfg.optim.lr


def test_a_resumed_run_keeps_the_fitted_length():
    from types import SimpleNamespace

    from rspretrain.core.time_budget import TimeBudget

    fitted = TimeBudget(1.0)
    fitted.fitted_steps = 321
    resumed = TimeBudget(1.0)
    resumed.load_state_dict(fitted.state_dict())  # what Lightning does with the checkpoint's callback state
    trainer = SimpleNamespace(global_step=50, fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(max_steps=100000)))
    module = SimpleNamespace(schedule_total_steps=100000)
    resumed.on_train_start(trainer, module)
    assert trainer.fit_loop.epoch_loop.max_steps == 321 and module.schedule_total_steps == 321
    # and it does not re-calibrate: the length stays what the interrupted run measured
    resumed.on_train_batch_end(trainer, module, None, None, 0)
    assert resumed.fitted_steps == 321


def test_cpu_clock_budget_and_a_bad_clock():
    import pytest

    from rspretrain.core.errors import ConfigError
    from rspretrain.core.time_budget import TimeBudget

    assert TimeBudget(1.0, clock="cpu").now is time.process_time
    with pytest.raises(ConfigError, match="budget_clock: 'gpu'"):
        TimeBudget(1.0, clock="gpu")
