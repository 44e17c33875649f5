import pytest

from rspretrain.core.config import parse_overrides
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


def test_parse_overrides_forms():
    assert parse_overrides(["--a.b", "3", "--c=true", "--d", "x,y"]) == {"a.b": 3, "c": True, "d": "x,y"}
    with pytest.raises(ConfigError):
        parse_overrides(["--a.b"])
