"""Every shipped paper config, resolved at its paper's scale, is the paper's recipe (METHODS.md), difference by
difference explained; and the optimiser each builds is the paper's, class and flags."""

import dataclasses

import pytest
import torch
from torch import nn

from rspretrain.core.config import flatten
from rspretrain.core.errors import ConfigError, DataError
from rspretrain.core.optim import build_optimizer
from rspretrain.pretrain.config import full_config, load_config
from rspretrain.pretrain.paper_recipes import PAPER_RECIPES, recipe_differences
from rspretrain.pretrain.run import resolve_run_recipe
from rspretrain.training.recipe import resolve_recipe

#: Transcribed from METHODS.md §1.5 (GeRSP), §2.7 (CMID), §3.5 (GeoKR) and MoCo v2: total steps at the paper's scale.
PAPER_STEPS = {
    "gersp_resnet50_paper": (8, 1_281_167, 100 * 5004),  # 8 GPUs x 32, 100 epochs of ImageNet's 1.28M pairs
    "moco_resnet50_paper": (8, 1_281_167, 200 * 5004),  # 8 GPUs x 32, 200 epochs of ImageNet
    "cmid_resnet50_paper": (4, 1_000_000, 200 * 3906),  # 4 GPUs x 64, 200 epochs of ~1M Million-AID images
    "cmid_swin_base_paper": (4, 1_000_000, 200 * 3906),
    "geokr_resnet50_paper": (1, 1_431_950, 10 * 178_993),  # 1 GPU x 8, 10 epochs of Levir-KR (~1.79M iterations)
}


def _resolved(name):
    devices, samples, _ = PAPER_STEPS[name]
    cfg = load_config(name, {"trainer.devices": devices})
    recipe = resolve_run_recipe(cfg, samples_per_epoch=samples)
    return cfg, recipe, flatten(full_config(dataclasses.replace(cfg, optim=recipe.optim, trainer=recipe.trainer)))


def test_every_paper_config_has_a_recipe():
    from rspretrain.pretrain.config import CONFIG_DIR

    assert sorted(p.stem for p in CONFIG_DIR.glob("*_paper.yaml")) == sorted(PAPER_RECIPES) == sorted(PAPER_STEPS)


@pytest.mark.parametrize("name", sorted(PAPER_STEPS))
def test_paper_config_resolves_to_the_paper_recipe(name):
    cfg, recipe, flat = _resolved(name)
    paper = PAPER_RECIPES[name]
    assert recipe.global_batch == paper.global_batch
    assert recipe.trainer.max_steps == PAPER_STEPS[name][2] == paper.values["trainer.max_steps"]
    differences = recipe_differences(flat, paper, recipe.world_size, recipe.samples_per_epoch)
    reasons = [f"({reason})" for reason in paper.explained.values()]
    unexplained = [line for line in differences if not any(reason in line for reason in reasons)]
    assert unexplained == []
    assert len(differences) <= len(paper.explained)


def test_paper_lrs_warmups_and_periods():
    _, gersp, _ = _resolved("gersp_resnet50_paper")
    assert gersp.optim.lr == pytest.approx(0.007) and gersp.optim.restart_period_steps == 20 * 5004
    _, cmid, flat = _resolved("cmid_resnet50_paper")
    assert cmid.optim.lr == pytest.approx(4e-3)  # 1e-3 x 4 GPUs at 64 each
    assert cmid.optim.warmup_steps == 10 * 3906 and flat["trainer.sync_batchnorm"] is True
    assert flat["model.teacher_temp_warmup_epochs"] == 50
    _, geokr, _ = _resolved("geokr_resnet50_paper")
    assert geokr.optim.step_every == 178_993 and geokr.optim.lr == 1e-3  # StepLR 0.9 once per epoch


@pytest.mark.parametrize(("name", "optimizer", "flags"), [
    ("gersp_resnet50_paper", torch.optim.SGD, {"momentum": 0.9, "nesterov": False, "weight_decay": 5e-4}),
    ("moco_resnet50_paper", torch.optim.SGD, {"momentum": 0.9, "nesterov": False, "weight_decay": 1e-4}),
    ("cmid_resnet50_paper", "Adan", {"betas": (0.98, 0.92, 0.99), "eps": 1e-8}),
    ("cmid_swin_base_paper", "Adan", {"betas": (0.98, 0.92, 0.99), "eps": 1e-8}),
    ("geokr_resnet50_paper", torch.optim.Adam, {"weight_decay": 0.0}),
])
def test_paper_optimiser_class_and_flags(name, optimizer, flags):
    _, recipe, _ = _resolved(name)
    opt, _ = build_optimizer(nn.Linear(3, 3), recipe.optim, 10)
    assert (type(opt).__name__ == optimizer) if isinstance(optimizer, str) else (type(opt) is optimizer)
    for key, value in flags.items():
        got = opt.param_groups[0][key] if key != "weight_decay" else max(g[key] for g in opt.param_groups)
        assert got == pytest.approx(value), key


def test_a_global_batch_that_does_not_divide_the_queue_is_refused():
    cfg = load_config("moco_resnet50_paper", {"data.batch_size": 48})
    with pytest.raises(ConfigError, match="model.queue_size 65536 is not a multiple of the global batch 48"):
        resolve_run_recipe(cfg, samples_per_epoch=10_000)
    cfg = load_config("moco_resnet50_paper", {"trainer.devices": 3})
    with pytest.raises(ConfigError, match="global batch 96 \\(32 x 3 rank"):
        resolve_run_recipe(cfg, samples_per_epoch=10_000)


def test_geokr_paper_config_starts_from_a_local_timm_imagenet_file(tmp_path):
    import timm
    from safetensors.torch import save_file

    from rspretrain.pretrain.methods import get_method

    imagenet = timm.create_model("resnet50", pretrained=False)  # stands in for resnet50.tv_in1k, built locally
    with torch.no_grad():
        for p in imagenet.parameters():
            p.normal_()
    weights = tmp_path / "resnet50_imagenet.safetensors"
    save_file({k: v.contiguous() for k, v in imagenet.state_dict().items()}, str(weights))
    cfg = load_config("geokr_resnet50_paper", {"model.init_weights": str(weights)})
    recipe = resolve_recipe(cfg.optim, cfg.trainer, cfg.data.batch_size, 800)
    model = get_method("geokr")(**cfg.model, in_chans=3, num_classes=8, optim=dataclasses.asdict(recipe.optim),
                                views=dataclasses.asdict(cfg.views))
    reference = {k: v for k, v in imagenet.state_dict().items() if not k.startswith("fc.")}
    for network in (model.backbone.model, model.teacher.module["backbone"].model):
        state = network.state_dict()
        assert all(torch.equal(state[k], v) for k, v in reference.items())
    # As shipped, the config names a file to give: a clear error until it is given.
    shipped = load_config("geokr_resnet50_paper")
    with pytest.raises(DataError, match="CHANGE_ME_resnet50_imagenet.safetensors: backbone weight file not found"):
        get_method("geokr")(**shipped.model, in_chans=3, num_classes=8, optim=dataclasses.asdict(recipe.optim))
