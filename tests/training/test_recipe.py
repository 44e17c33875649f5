import pytest

from rspretrain.core.errors import ConfigError
from rspretrain.core.optim import OptimConfig
from rspretrain.training.recipe import resolve_recipe
from rspretrain.training.trainer import TrainerConfig, build_trainer


def test_epochs_resolve_to_steps_of_the_global_batch():
    optim = OptimConfig(schedule="cosine_restarts", warmup_epochs=2, restart_period_epochs=20)
    trainer = TrainerConfig(max_epochs=100, devices=8)
    recipe = resolve_recipe(optim, trainer, per_device_batch=32, samples_per_epoch=1_281_167)
    assert recipe.global_batch == 256 and recipe.steps_per_epoch == 5004  # 1,281,167 // 256, last batch dropped
    assert recipe.trainer.max_steps == 500_400 and recipe.trainer.max_epochs is None
    assert recipe.optim.warmup_steps == 10_008 and recipe.optim.restart_period_steps == 100_080
    assert recipe.optim.warmup_epochs is None and recipe.optim.restart_period_epochs is None
    assert recipe.epochs == pytest.approx(100)
    assert recipe.resolved["trainer.max_steps"] == ("100 epochs", 500_400)


def test_nodes_and_gradient_accumulation_count_in_the_global_batch():
    trainer = TrainerConfig(max_epochs=1, devices=4, num_nodes=2, lightning={"accumulate_grad_batches": 2})
    recipe = resolve_recipe(OptimConfig(lr=0.1, lr_reference_batch=256, lr_scaling="linear"), trainer, 32, 10_000)
    assert recipe.global_batch == 512 and recipe.steps_per_epoch == 19
    assert recipe.optim.lr == pytest.approx(0.2) and recipe.optim.lr_scaling == "none"
    assert recipe.lr_given == 0.1


def test_steps_keep_working_and_lr_without_scaling_is_kept():
    recipe = resolve_recipe(OptimConfig(lr=0.03, warmup_steps=7), TrainerConfig(max_steps=123), 64, None)
    assert recipe.trainer.max_steps == 123 and recipe.optim.warmup_steps == 7 and recipe.optim.lr == 0.03
    assert recipe.steps_per_epoch is None and recipe.epochs is None and recipe.resolved == {}


def test_step_every_zero_is_one_epoch_and_step_every_epochs_resolves():
    per_epoch = resolve_recipe(OptimConfig(schedule="step", step_every=0), TrainerConfig(), 8, 800)
    assert per_epoch.optim.step_every == 100
    two = resolve_recipe(OptimConfig(schedule="step", step_every_epochs=2), TrainerConfig(), 8, 800)
    assert two.optim.step_every == 200


def test_epochs_with_an_unknown_dataset_size_name_the_key():
    with pytest.raises(ConfigError, match=r"trainer.max_epochs: .*size is unknown.*trainer.max_steps"):
        resolve_recipe(OptimConfig(), TrainerConfig(max_epochs=3), 8, None)
    with pytest.raises(ConfigError, match=r"optim.warmup_epochs: .*optim.warmup_steps"):
        resolve_recipe(OptimConfig(warmup_epochs=1), TrainerConfig(), 8, None)


def test_an_epoch_smaller_than_the_global_batch_is_refused():
    with pytest.raises(ConfigError, match="fewer than the global batch of 64"):
        resolve_recipe(OptimConfig(), TrainerConfig(max_epochs=1, devices=2), 32, 50)


def test_the_harness_refuses_an_unresolved_epoch_count(tmp_path):
    with pytest.raises(ConfigError, match="trainer.max_epochs: resolve the recipe"):
        build_trainer(TrainerConfig(max_epochs=2), tmp_path)
    with pytest.raises(ConfigError, match="trainer.max_epochs must be > 0"):
        TrainerConfig(max_epochs=0)
