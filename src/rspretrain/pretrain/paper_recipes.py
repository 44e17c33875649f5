"""The published pretraining recipes, transcribed from ``METHODS.md``, and how a run config differs from them.

Each :class:`PaperRecipe` holds what a paper (and its released code) trained with: devices, per-device batch, the
samples in one epoch of its data, and the resolved values a run config must reach at that scale, by dotted key
(``optim.lr`` after batch scaling, ``trainer.max_steps`` after epochs, ...). :func:`recipe_differences` compares a
config resolved for the paper's devices and data (:func:`rspretrain.training.recipe.resolve_recipe`) with it, one line
per key; a difference the toolkit keeps on purpose carries its reason (``explained``). ``rspretrain plan`` prints
them, and ``tests/pretrain/test_paper_recipes.py`` resolves every shipped paper config at its paper's scale and
requires every difference to be explained.

Step counts follow the harness's epoch (``samples // global batch``, the last partial batch dropped).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

#: ImageNet-1k train (GeRSP's epoch is its length, the larger of its two sources; MoCo v2's data).
IMAGENET_TRAIN = 1_281_167
#: The Million-AID test split CMID pretrains on: "~1M images" (METHODS.md §1.3, §2.7; the exact count is not verified
#: there, so CMID's step counts here are for 1,000,000).
MILLION_AID_TEST = 1_000_000
#: Levir-KR, GeoKR's patches (METHODS.md §3.5).
LEVIR_KR = 1_431_950


@dataclass(frozen=True)
class PaperRecipe:
    """A published recipe: its scale and the resolved values it implies (dotted keys of a run config)."""

    method: str
    source: str
    devices: int
    per_device_batch: int
    samples_per_epoch: int
    data: str
    values: dict[str, Any]
    explained: dict[str, str] = field(default_factory=dict)

    @property
    def global_batch(self) -> int:
        return self.devices * self.per_device_batch

    @property
    def steps_per_epoch(self) -> int:
        return self.samples_per_epoch // self.global_batch


def _steps(samples: int, batch: int, epochs: float) -> int:
    return round(epochs * (samples // batch))


_MOCO_STEPS = _steps(IMAGENET_TRAIN, 256, 1)
_CMID_STEPS = _steps(MILLION_AID_TEST, 256, 1)
_GEOKR_STEPS = _steps(LEVIR_KR, 8, 1)
_CMID_VALUES: dict[str, Any] = {
    "data.batch_size": 64, "trainer.max_steps": 200 * _CMID_STEPS, "optim.name": "adan", "optim.lr": 1e-3 * 4,
    "optim.weight_decay": 0.02, "optim.no_decay_on_norm_and_bias": True, "optim.schedule": "cosine",
    "optim.warmup_steps": 10 * _CMID_STEPS, "optim.warmup_start_ratio": 0.01, "optim.min_lr_ratio": 1e-6 / 4e-3,
    "trainer.sync_batchnorm": True, "trainer.precision": "16-mixed", "model.image_size": 224,
    "model.temperature": 0.2, "model.queue_size": 65536, "model.proj_out_dim": 256, "model.num_prototypes": 2048,
    "model.student_temp": 0.1, "model.warmup_teacher_temp": 0.04, "model.teacher_temp": 0.07,
    "model.teacher_temp_warmup_epochs": 50, "model.center_momentum": 0.9, "model.base_momentum": 0.996,
    "model.final_momentum": 1.0, "model.mim_weight": 1.0, "model.global_weight": 1.0, "model.local_weight": 1.0,
    "model.cell_matching": "official", "views.crop_scale_min": 0.3, "views.mask_ratio": 0.6,
    "views.mask_patch_size": 32,
}
_CMID_EXPLAINED = {
    "trainer.precision": "auto: bf16 autocast where the hardware has bf16 (AMP without loss scaling); "
                         "--trainer.precision 16-mixed for the released fp16 AMP",
    "model.cell_matching": "geometric pairing is the paper's intent; official reproduces the released code's "
                           "top-left gridding (METHODS.md CMID §2.5 (c))",
}

#: Shipped paper config -> the recipe it reproduces.
PAPER_RECIPES: dict[str, PaperRecipe] = {
    "gersp_resnet50_paper": PaperRecipe(
        method="gersp", source="METHODS.md §1.3, §1.5", devices=8, per_device_batch=32,
        samples_per_epoch=IMAGENET_TRAIN, data="Million-AID test (RS) paired with ImageNet-1k train (1.28M per epoch)",
        values={
            "data.batch_size": 32, "trainer.max_steps": 100 * _MOCO_STEPS, "optim.name": "sgd", "optim.lr": 0.007,
            "optim.momentum": 0.9, "optim.weight_decay": 5e-4, "optim.schedule": "cosine_restarts",
            "optim.restart_period_steps": 20 * _MOCO_STEPS, "optim.min_lr_ratio": 0.001 / 0.007,
            "optim.warmup_steps": 0, "trainer.sync_batchnorm": False, "trainer.precision": "32-true",
            "model.image_size": 224, "model.proj_out_dim": 128, "model.temperature": 0.07, "model.queue_size": 65536,
            "model.momentum": 0.999, "model.alpha": 1.0, "model.freeze_key_projector": True,
            "views.crop_scale_min": 0.2, "views.jitter_p": 1.0, "views.hue": 0.4, "views.grayscale_p": 0.2,
            "views.grayscale_before_jitter": True, "views.blur_p": 0.0,
        },
    ),
    "moco_resnet50_paper": PaperRecipe(
        method="moco", source="MoCo v2 (Chen et al. 2020) as cited in METHODS.md", devices=8, per_device_batch=32,
        samples_per_epoch=IMAGENET_TRAIN, data="ImageNet-1k train",
        values={
            "data.batch_size": 32, "trainer.max_steps": 200 * _MOCO_STEPS, "optim.name": "sgd", "optim.lr": 0.03,
            "optim.momentum": 0.9, "optim.weight_decay": 1e-4, "optim.schedule": "cosine", "optim.warmup_steps": 0,
            "optim.min_lr_ratio": 0.0, "trainer.sync_batchnorm": False, "trainer.precision": "32-true",
            "model.image_size": 224, "model.proj_out_dim": 128, "model.temperature": 0.2, "model.queue_size": 65536,
            "model.momentum": 0.999,
        },
    ),
    "cmid_resnet50_paper": PaperRecipe(
        method="cmid", source="METHODS.md §2.2-§2.7", devices=4, per_device_batch=64,
        samples_per_epoch=MILLION_AID_TEST, data="Million-AID test split (~1M images)",
        values={**_CMID_VALUES, "model.backbone": "resnet50"}, explained=_CMID_EXPLAINED,
    ),
    "cmid_swin_base_paper": PaperRecipe(
        method="cmid", source="METHODS.md §2.2-§2.7", devices=4, per_device_batch=64,
        samples_per_epoch=MILLION_AID_TEST, data="Million-AID test split (~1M images)",
        values={**_CMID_VALUES, "model.backbone": "swin_base_patch4_window7_224"}, explained=_CMID_EXPLAINED,
    ),
    "geokr_resnet50_paper": PaperRecipe(
        method="geokr", source="METHODS.md §3.4, §3.5", devices=1, per_device_batch=8, samples_per_epoch=LEVIR_KR,
        data="Levir-KR, 1,431,950 Gaofen patches (not public)",
        values={
            "data.batch_size": 8, "trainer.max_steps": 10 * _GEOKR_STEPS, "optim.name": "adam", "optim.lr": 1e-3,
            "optim.weight_decay": 0.0, "optim.schedule": "step", "optim.step_gamma": 0.9,
            "optim.step_every": _GEOKR_STEPS, "trainer.precision": "16-mixed", "trainer.sync_batchnorm": False,
            "model.image_size": 256, "model.teacher_alpha": 0.95, "model.teacher_schedule": "sparse",
            "model.teacher_intervals": [500, 10500, 20500, 30500], "model.consistency": "ce",
            "model.export": "teacher", "model.init_weights": "ImageNet ResNet-50",
        },
        explained={
            "model.init_weights": "the ImageNet weights are a local file the user gives (nothing is downloaded)",
        },
    ),
}

#: Each method's published recipe (for configs of that method that are not themselves a paper config).
METHOD_RECIPES = {"gersp": "gersp_resnet50_paper", "moco": "moco_resnet50_paper", "cmid": "cmid_resnet50_paper",
                  "geokr": "geokr_resnet50_paper"}


def paper_recipe(config_name: str | None, method: str) -> PaperRecipe | None:
    """The recipe a config reproduces: its own when it is a paper config, else its method's (None: no paper)."""
    if config_name in PAPER_RECIPES:
        return PAPER_RECIPES[config_name]
    return PAPER_RECIPES.get(METHOD_RECIPES.get(method, ""))


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def recipe_differences(resolved: dict[str, Any], recipe: PaperRecipe, world_size: int,
                       samples_per_epoch: int | None) -> list[str]:
    """One line per value of ``resolved`` (a flat ``{dotted key: value}`` of the resolved config) that differs from
    ``recipe``, with the reason when the difference is by design; the scale first (devices, data size)."""
    lines = []
    if world_size != recipe.devices:
        lines.append(f"devices: {world_size} rank(s), paper {recipe.devices} (global batch "
                     f"{resolved.get('data.batch_size', 0) * world_size}, paper {recipe.global_batch})")
    if samples_per_epoch != recipe.samples_per_epoch:
        lines.append(f"data: {samples_per_epoch if samples_per_epoch is not None else 'unknown'} samples per epoch, "
                     f"paper {recipe.samples_per_epoch:,} ({recipe.data})")
    for key, expected in recipe.values.items():
        given = resolved.get(key)
        if key == "model.init_weights":  # the paper names the weights; a config names a file
            same = (given is not None) == (expected is not None)
        else:
            same = _equal(given, expected)
        if not same:
            reason = recipe.explained.get(key)
            lines.append(f"{key}: {given!r}, paper {expected!r}" + (f" ({reason})" if reason else ""))
    return lines
