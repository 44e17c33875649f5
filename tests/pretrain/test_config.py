import pytest

from rspretrain.core.errors import ConfigError
from rspretrain.pretrain.config import load_config


def test_shipped_config_loads_and_overrides_apply():
    cfg = load_config("moco_resnet18_eurosat", ["--optim.lr", "0.1", "--model.queue_size=256", "--data.max_per_class", "null"])
    assert cfg.method == "moco"
    assert cfg.optim.lr == 0.1 and isinstance(cfg.optim.lr, float)
    assert cfg.model["queue_size"] == 256
    assert cfg.data.max_per_class is None


def test_int_accepted_for_float():
    cfg = load_config(None, {"optim.lr": 1})
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)


@pytest.mark.parametrize(
    "override,needle",
    [
        ({"optim.lrr": 0.1}, "optim.lrr"),
        ({"model.temprature": 0.1}, "model.temprature"),
        ({"bogus": 1}, "bogus"),
        ({"data.batch_size": "big"}, "data.batch_size"),
        ({"trainer.max_steps": 1.5}, "trainer.max_steps"),
        ({"model.temperature": "hot"}, "model.temperature"),
        ({"model.in_chans": 4}, "model.in_chans"),
        ({"method": "nope"}, "nope"),
    ],
)
def test_bad_keys_and_types_name_the_key(override, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config("moco_resnet18_eurosat", override)


def test_missing_config_file_lists_shipped_ones(tmp_path):
    with pytest.raises(ConfigError, match="moco_resnet18_eurosat"):
        load_config(tmp_path / "nope.yaml")


def test_configs_compose_in_order_and_overrides_win(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("method: moco\ndata: {batch_size: 16, max_per_class: 4}\noptim: {lr: 0.1}\n")
    small = tmp_path / "small.yaml"
    small.write_text("data: {batch_size: 8}\ntrainer: {max_steps: 7}\n")
    cfg = load_config([base, small], ["--optim.lr", "0.2"])
    assert (cfg.data.batch_size, cfg.data.max_per_class, cfg.trainer.max_steps, cfg.optim.lr) == (8, 4, 7, 0.2)
    cfg = load_config(["moco_resnet18_eurosat", small])  # a shipped name composes with a file
    assert cfg.model["queue_size"] == 4096 and cfg.data.batch_size == 8


def test_print_config_prints_the_whole_run_and_reads_back(tmp_path, capsys):
    import yaml

    from rspretrain.apps.cli import main

    assert main(["pretrain", "cmid", "--config", "cmid_resnet18_eurosat", "--trainer.gradient_clip_val", "0.5",
                 "--print_config"]) == 0
    printed = capsys.readouterr().out
    shown = yaml.safe_load(printed)
    assert shown["method"] == "cmid" and shown["trainer"]["gradient_clip_val"] == 0.5
    assert "mim_weight" in shown["model"]  # the method's defaults are shown, not only what the file sets
    path = tmp_path / "printed.yaml"
    path.write_text(printed)
    again = load_config(path)
    original = load_config("cmid_resnet18_eurosat", {"trainer.gradient_clip_val": 0.5})
    assert again.trainer == original.trainer and again.data == original.data and again.optim == original.optim
    assert {k: again.model[k] for k in original.model} == original.model


def test_any_trainer_argument_and_callbacks_and_loggers_by_class_path(tmp_path):
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import CSVLogger

    from rspretrain.training.trainer import build_trainer

    cfg = load_config("moco_resnet18_eurosat", [
        "--trainer.gradient_clip_val", "1.0", "--trainer.accumulate_grad_batches", "2",
        "--trainer.callbacks+=LearningRateMonitor", "--trainer.callbacks.logging_interval", "step",
        f"--trainer.logger={{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {{save_dir: {tmp_path}/mine}}}}",
    ])
    assert cfg.trainer.lightning["gradient_clip_val"] == 1.0
    trainer = build_trainer(cfg.trainer, tmp_path / "run")
    assert trainer.gradient_clip_val == 1.0 and trainer.accumulate_grad_batches == 2
    (monitor,) = [c for c in trainer.callbacks if isinstance(c, LearningRateMonitor)]
    assert monitor.logging_interval == "step"
    assert [lg.save_dir for lg in trainer.loggers if isinstance(lg, CSVLogger)] == [str(tmp_path / "run"),
                                                                                    f"{tmp_path}/mine"]
    not_a_callback = [{"class_path": "collections.OrderedDict"}]
    with pytest.raises(ConfigError, match='"trainer.callbacks"'):
        load_config(None, {"trainer.callbacks": not_a_callback})
    from rspretrain.training.trainer import TrainerConfig

    with pytest.raises(ConfigError, match="trainer.callbacks: collections.OrderedDict is not a Callback"):
        build_trainer(TrainerConfig(lightning={"callbacks": not_a_callback}), None)


def test_precision_and_datamodule_errors_are_one_line_naming_the_key():
    with pytest.raises(ConfigError, match=r"trainer\.precision: 'bf17' is not one of auto, 32-true, bf16-mixed") as err:
        load_config("moco_resnet18_eurosat", {"trainer.precision": "bf17"})
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"\"datamodule\".*No module named 'nope'"):
        load_config("moco_resnet18_eurosat", {"datamodule": {"class_path": "nope.X"}})
    with pytest.raises(ConfigError, match="method: cannot import 'nope.Method'"):
        load_config(None, {"method": "nope.Method"})


def test_a_runs_saved_config_reads_back_as_the_same_run(tmp_path, data_root):
    from rspretrain.pretrain.run import pretrain

    out = tmp_path / "run"
    overrides = {"data.root": str(data_root), "data.max_per_class": 4, "data.batch_size": 8, "model.image_size": 32,
                 "model.queue_size": 32, "trainer.max_steps": 1, "trainer.out_dir": str(out),
                 "trainer.progress_bar": False, "trainer.gradient_clip_val": 2.0}
    cfg = load_config("moco_resnet18_eurosat", overrides)
    pretrain(cfg)
    again = load_config(out / "config.yaml")
    assert again.to_dict() == {**cfg.to_dict(), "model": {**again.model, **cfg.model}}
    assert again.trainer.lightning == {"gradient_clip_val": 2.0}


def test_override_forms_and_a_flag_without_its_value():
    """What the hand-written override parser promised, now through jsonargparse: ``--key value`` and ``--key=value``
    with values read as YAML (numbers, booleans, strings with commas), and a flag without a value refused."""
    cfg = load_config(None, ["--optim.lr", "3", "--data.skip_corrupt=true", "--data.dataset", "x,y"])
    assert (cfg.optim.lr, cfg.data.skip_corrupt, cfg.data.dataset) == (3.0, True, "x,y")
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config(None, ["--optim.lr"])
