"""The allowed range of every numeric config value, checked where a config is read: one line naming the key.

Types are checked by the parser (jsonargparse) and :func:`~rspretrain.core.config.coerce`; this is the other half: a
batch of 0 (a ``ZeroDivisionError`` deep in the sampler), a negative batch (a run that trains on nothing), an image
size of 0, a negative worker count or a momentum of 1.5 are refused before anything is built, as
``ConfigError("data.batch_size must be >= 1, got 0")``.

One table (:data:`RANGES`) keyed by ``section.key``; a key a method or view recipe adds without a range here is caught
by ``tests/core/test_ranges.py``, which walks every numeric key of every section and every registered method and
sets a value outside its range. Sequences (``model.teacher_intervals``, ``views.blur_p``) are checked per item.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rspretrain.core.errors import ConfigError

__all__ = ["RANGES", "Range", "check_range", "check_ranges"]


@dataclass(frozen=True)
class Range:
    """An interval of allowed values; ``None`` ends are unbounded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"

    def outside(self) -> float:
        """A value just outside the range (for tests)."""
        if self.low is not None:
            return self.low if self.low_open else self.low - 1
        return self.high + 1


AT_LEAST_1 = Range(1)
NON_NEGATIVE = Range(0)
POSITIVE = Range(0, low_open=True)
UNIT = Range(0, 1)  # probabilities, momenta, ratios
UNIT_OPEN_HIGH = Range(0, 1, high_open=True)
UNIT_OPEN_LOW = Range(0, 1, low_open=True)

#: ``section.key -> Range`` of every numeric config value.
RANGES: dict[str, Range] = {
    # data
    "data.batch_size": AT_LEAST_1, "data.epoch_length": AT_LEAST_1, "data.image_size": AT_LEAST_1,
    "data.max_image_pixels": AT_LEAST_1, "data.max_per_class": AT_LEAST_1, "data.memory_limit_gb": POSITIVE,
    "data.natural_image_size": AT_LEAST_1, "data.num_workers": NON_NEGATIVE, "data.stats_max_images": AT_LEAST_1,
    # optim
    "optim.lr": POSITIVE, "optim.lr_reference_batch": AT_LEAST_1, "optim.min_lr_ratio": UNIT,
    "optim.momentum": UNIT_OPEN_HIGH, "optim.restart_cycles": AT_LEAST_1, "optim.restart_period_epochs": POSITIVE,
    "optim.restart_period_steps": NON_NEGATIVE, "optim.step_every": NON_NEGATIVE, "optim.step_every_epochs": POSITIVE,
    "optim.step_gamma": POSITIVE, "optim.warmup_epochs": NON_NEGATIVE, "optim.warmup_start_ratio": UNIT,
    "optim.warmup_steps": NON_NEGATIVE, "optim.weight_decay": NON_NEGATIVE,
    # trainer
    "trainer.budget_minutes": POSITIVE, "trainer.ckpt_every_n_steps": AT_LEAST_1, "trainer.devices": AT_LEAST_1,
    "trainer.log_every_n_steps": AT_LEAST_1, "trainer.max_epochs": POSITIVE, "trainer.max_steps": AT_LEAST_1,
    "trainer.max_time_minutes": POSITIVE, "trainer.num_nodes": AT_LEAST_1,
    # monitor (the online kNN monitor)
    "monitor.batch_size": AT_LEAST_1, "monitor.every_n_steps": AT_LEAST_1, "monitor.k": AT_LEAST_1,
    "monitor.max_test_per_class": AT_LEAST_1, "monitor.max_train_per_class": AT_LEAST_1,
    "monitor.temperature": POSITIVE,
    # model (every registered method's constructor; the data-derived ones are set from the data)
    "model.alpha": NON_NEGATIVE, "model.base_momentum": UNIT, "model.center_momentum": UNIT,
    "model.consistency_weight": NON_NEGATIVE, "model.ema_momentum": UNIT, "model.fft_unmasked_weight": NON_NEGATIVE,
    "model.fft_weight": NON_NEGATIVE, "model.final_momentum": UNIT, "model.focal_alpha": NON_NEGATIVE,
    "model.focal_gamma": NON_NEGATIVE, "model.global_weight": NON_NEGATIVE, "model.image_size": AT_LEAST_1,
    "model.in_chans": AT_LEAST_1, "model.label_smoothing": UNIT_OPEN_HIGH, "model.local_bottleneck_dim": AT_LEAST_1,
    "model.local_hidden_dim": AT_LEAST_1, "model.local_weight": NON_NEGATIVE, "model.mim_weight": NON_NEGATIVE,
    "model.momentum": UNIT, "model.num_classes": AT_LEAST_1, "model.num_matches": AT_LEAST_1,
    "model.num_prototypes": AT_LEAST_1, "model.proj_hidden_dim": AT_LEAST_1, "model.proj_out_dim": AT_LEAST_1,
    "model.queue_size": AT_LEAST_1, "model.shuffle_bn_groups": AT_LEAST_1, "model.student_temp": POSITIVE,
    "model.teacher_alpha": UNIT, "model.teacher_batch_size": AT_LEAST_1, "model.teacher_intervals": AT_LEAST_1,
    "model.teacher_temp": POSITIVE, "model.teacher_temp_warmup_epochs": NON_NEGATIVE,
    "model.teacher_temp_warmup_fraction": UNIT, "model.temperature": POSITIVE, "model.value_scale": POSITIVE,
    "model.warmup_teacher_temp": POSITIVE, "model.std": POSITIVE,
    # views (every method's view recipe)
    "views.blur_kernel_max": AT_LEAST_1, "views.blur_kernel_min": AT_LEAST_1, "views.blur_p": UNIT,
    "views.blur_sigma_max": POSITIVE, "views.blur_sigma_min": NON_NEGATIVE, "views.brightness": NON_NEGATIVE,
    "views.contrast": NON_NEGATIVE, "views.crop_scale_max": UNIT_OPEN_LOW, "views.crop_scale_min": UNIT_OPEN_LOW,
    "views.flip_p": UNIT, "views.grayscale_p": UNIT, "views.hflip_p": UNIT, "views.hue": Range(0, 0.5),
    "views.jitter_p": UNIT, "views.mask_patch_size": AT_LEAST_1, "views.mask_ratio": UNIT_OPEN_HIGH,
    "views.noise_p": UNIT, "views.noise_var_max": NON_NEGATIVE, "views.noise_var_min": NON_NEGATIVE,
    "views.rot90_p": UNIT, "views.saturation": NON_NEGATIVE, "views.solarize_p": UNIT,
    "views.solarize_threshold": UNIT, "views.vflip_p": UNIT,
}  # fmt: skip


def check_range(key: str, value: Any, allowed: Range | None = None) -> None:
    """Raise a one-line :class:`ConfigError` if the number (or any number in the sequence) ``value`` lies outside
    ``allowed`` (default: ``RANGES[key]``); None and non-numbers pass (their type is checked elsewhere)."""
    allowed = allowed if allowed is not None else RANGES.get(key)
    if allowed is None or value is None or isinstance(value, (bool, str)):
        return
    items = value if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if isinstance(item, (int, float)) and not isinstance(item, bool) and item not in allowed:
            raise ConfigError(f"{key} must be {allowed}, got {value!r}")


def check_ranges(section: str, values: Mapping[str, Any]) -> None:
    """:func:`check_range` for every ``section.key`` of ``values`` that has a range."""
    for key, value in values.items():
        check_range(f"{section}.{key}", value)


