"""The fast-step choice: precision (auto / as given / refused), channels_last for convolutional backbones, and a
torch.compile that falls back to eager with one warning line."""

from __future__ import annotations

import logging

import pytest
import torch

from rspretrain.core.errors import ConfigError
from rspretrain.nn.backbones import create_backbone
from rspretrain.training.fast_step import (
    PRECISION_CHOICES,
    apply_fast_step,
    check_compile_backend,
    check_precision,
    is_convolutional,
    native_bf16,
    resolve_fast_step,
    resolve_precision,
)
from rspretrain.training.trainer import TrainerConfig


def test_precision_choices_aliases_and_refusals():
    assert [check_precision(p) for p in PRECISION_CHOICES] == list(PRECISION_CHOICES)
    assert (check_precision("bf16"), check_precision(32), check_precision("16")) == ("bf16-mixed", "32-true",
                                                                                     "16-mixed")
    with pytest.raises(ConfigError, match=r"trainer.precision: 'bogus' is not one of auto, 32-true, bf16-mixed"):
        check_precision("bogus")
    with pytest.raises(ConfigError, match="keep fp32 state"):
        check_precision("bf16-true")
    with pytest.raises(ConfigError, match="trainer.precision"):
        TrainerConfig(precision="64-true")
    assert TrainerConfig().precision == "auto" and TrainerConfig().channels_last == "auto"
    with pytest.raises(ConfigError, match="trainer.channels_last: 'yes' is not one of true, false, auto"):
        TrainerConfig(channels_last="yes")


def test_auto_precision_follows_the_hardware_and_the_method():
    has_bf16, why = native_bf16("cpu")
    precision, reason = resolve_precision("auto", "cpu")
    assert precision == ("bf16-mixed" if has_bf16 else "32-true") and why in reason
    # A method whose parity did not hold keeps fp32 under auto, but an explicit choice is kept.
    assert resolve_precision("auto", "cpu", auto_bf16=False)[0] == "32-true"
    assert resolve_precision("bf16-mixed", "cpu", auto_bf16=False)[0] == "bf16-mixed"
    assert resolve_precision("32-true", "cpu") == ("32-true", "as given")


def test_native_bf16_on_this_cpu_agrees_with_its_flags():
    flags = open("/proc/cpuinfo").read().split() if __import__("os").path.exists("/proc/cpuinfo") else []
    expected = "avx512_bf16" in flags or "amx_bf16" in flags or "amx_tile" in flags
    if "bf16" in flags:  # an Arm CPU's feature list
        expected = True
    assert native_bf16("cpu")[0] == expected


@pytest.mark.parametrize("arch, conv", [("resnet18", True), ("vit_small_patch16_224", False),
                                        ("swin_tiny_patch4_window7_224", False)])
def test_channels_last_auto_is_for_convolutional_backbones(arch, conv):
    backbone = create_backbone(arch, image_size=64 if arch != "resnet18" else None)
    assert is_convolutional(backbone) == conv
    step = resolve_fast_step("32-true", "auto", "", "cpu", backbone)
    assert step.channels_last == conv and "auto" in step.reasons["channels_last"]
    assert resolve_fast_step("32-true", False, "", "cpu", backbone).channels_last is False
    assert "channels_last" in step.summary() and step.record()["precision"] == "32-true"


def test_unknown_compile_backend_is_one_line():
    assert check_compile_backend("") == "" and check_compile_backend("eager") == "eager"
    with pytest.raises(ConfigError, match="trainer.compile: 'nope' is not a torch.compile backend"):
        check_compile_backend("nope")


def test_a_failing_compile_falls_back_to_eager_with_one_warning(caplog):
    from torch._dynamo import register_backend

    @register_backend(name="rspretrain_test_broken")
    def _broken(graph_module, example_inputs):  # a backend that cannot compile anything
        raise RuntimeError("no compiler here")

    torch.manual_seed(0)
    backbone = create_backbone("resnet18")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = backbone.eval()(x)
    apply_fast_step(backbone, compile_backend="rspretrain_test_broken")
    with caplog.at_level(logging.WARNING, logger="rspretrain"), torch.no_grad():
        first, second = backbone(x), backbone(x)
    torch.testing.assert_close(first, expected)
    torch.testing.assert_close(second, expected)
    warnings = [r.getMessage() for r in caplog.records if "trainer.compile" in r.getMessage()]
    assert len(warnings) == 1 and "rspretrain_test_broken failed" in warnings[0] and "running eager" in warnings[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_a_gpu_accelerator_on_a_machine_without_one_is_one_line():
    with pytest.raises(ConfigError, match="trainer.accelerator gpu: this machine has no usable CUDA GPU"):
        resolve_precision("auto", "gpu")
