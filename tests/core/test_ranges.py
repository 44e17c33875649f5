"""Every numeric config value and command-line option has a range, and a value outside it is one line naming it."""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing

import pytest

from rspretrain.core.config import constructor_parameters
from rspretrain.core.errors import ConfigError
from rspretrain.core.optim import OptimConfig
from rspretrain.core.ranges import RANGES, Range, check_range
from rspretrain.pretrain import methods
from rspretrain.pretrain.config import DataConfig, MonitorConfig, load_config
from rspretrain.training.backbone_module import DATA_DERIVED
from rspretrain.training.trainer import TrainerConfig


def _numeric(annotation) -> bool:
    text = str(annotation)
    return ("int" in text or "float" in text) and "dict" not in text and "Literal" not in text


def _numeric_keys() -> dict[str, str]:
    """``section.key -> config that has it`` for every numeric key of the sections and of every method."""
    keys: dict[str, str] = {}
    default = methods.get_method("moco").default_config
    for section, cls in (("data", DataConfig), ("optim", OptimConfig), ("trainer", TrainerConfig),
                         ("monitor", MonitorConfig)):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if _numeric(hints[f.name]):
                keys.setdefault(f"{section}.{f.name}", default)
    for cls in methods.METHODS.values():
        for name, annotation in constructor_parameters(cls).items():
            if _numeric(annotation) and name not in DATA_DERIVED:
                keys.setdefault(f"model.{name}", cls.default_config)
        hints = typing.get_type_hints(cls.views_config_class)
        for f in dataclasses.fields(cls.views_config_class):
            if _numeric(hints[f.name]):
                keys.setdefault(f"views.{f.name}", cls.default_config)
    return keys


KEYS = _numeric_keys()


def test_every_numeric_key_has_a_range():
    missing = sorted(k for k in KEYS if k not in RANGES)
    assert not missing, f"numeric config keys without a range in rspretrain.core.ranges.RANGES: {missing}"
    assert len(KEYS) > 80  # the walk found the sections' and the methods' keys


@pytest.mark.parametrize("key", sorted(KEYS))
def test_a_value_outside_the_range_is_one_line_naming_the_key(key):
    allowed = RANGES[key]
    value = allowed.outside()
    annotation = str(_annotation(key))
    if "int" in annotation and "float" not in annotation:
        value = int(value)
    if "Sequence" in annotation or "tuple" in annotation or "list" in annotation:
        value = [value, value]
    with pytest.raises(ConfigError, match=re.escape(key)) as err:
        load_config(KEYS[key], {key: value})
    assert "\n" not in str(err.value)


def _annotation(key: str):
    section, name = key.split(".", 1)
    classes = {"data": DataConfig, "optim": OptimConfig, "trainer": TrainerConfig, "monitor": MonitorConfig}
    if section in classes:
        return typing.get_type_hints(classes[section])[name]
    cls = methods.get_method(load_config(KEYS[key]).method)
    if section == "model":
        return constructor_parameters(cls)[name]
    return typing.get_type_hints(cls.views_config_class)[name]


def test_range_bounds_and_messages():
    assert 1 in Range(1) and 0 not in Range(1) and 0.5 in Range(0, 1) and 1 not in Range(0, 1, high_open=True)
    assert float("nan") not in Range(0) and float("inf") not in Range(0)
    assert str(Range(0, low_open=True)) == "> 0" and str(Range(0, 1, high_open=True)) == "in [0, 1)"
    with pytest.raises(ConfigError, match=r"^model.teacher_intervals must be >= 1, got \[4, 0\]$"):
        check_range("model.teacher_intervals", [4, 0])
    check_range("data.image_size", None)  # None: "not set", allowed where the type allows it


def test_command_line_options_are_ranged_and_refuse_out_of_range_values(capsys):
    """Every numeric option of every subcommand has a ranged type; ``--image-size 0`` is argparse's one-line error."""
    from rspretrain.apps.cli import build_parser, main

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"evaluate", "finetune", "prepare", "quickstart", "benchmark"} <= set(sub.choices)
    plain = (int, float, typing.Optional[int], typing.Optional[float], int | None, float | None)
    unranged = [f"{name} {opt.option_strings[0]}" for name, p in sub.choices.items() for opt in p._actions
                if getattr(opt, "_typehint", opt.type) in plain]
    assert not unranged, f"numeric options without a range: {unranged}"
    assert main(["evaluate", "random:resnet18", "--image-size", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "rspretrain: error: --image-size must be > 0, got 0"  # the option as typed, the rule in words
