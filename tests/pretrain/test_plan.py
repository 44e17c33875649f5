"""``rspretrain plan`` and epoch-based recipes end to end: a run in epochs trains the steps the plan prints."""

import json

import pytest
import torch

from rspretrain.apps.cli import main

TINY = ["--config", "moco_resnet18_eurosat", "--data.max_per_class", "4", "--data.batch_size", "8",
        "--model.image_size", "32", "--model.queue_size", "16"]


def test_a_recipe_in_epochs_with_a_scaled_lr_trains_what_the_plan_says(tmp_path, data_root, capsys):
    recipe = ["--data.root", str(data_root), *TINY, "--trainer.max_epochs", "2", "--optim.lr", "0.1",
              "--optim.lr_reference_batch", "16", "--optim.lr_scaling", "linear", "--optim.schedule", "constant",
              "--optim.warmup_steps", "0"]
    assert main(["plan", *recipe, "--json", str(tmp_path / "plan.json")]) == 0
    printed = capsys.readouterr().out
    plan = json.loads((tmp_path / "plan.json").read_text())
    # 40 EuroSAT images (4 per class) // batch 8 = 5 steps per epoch; lr 0.1 at 16 -> 0.05 at 8.
    assert plan["samples_per_epoch"] == 40 and plan["samples_counted_from"] == "data"
    assert plan["steps_per_epoch"] == 5 and plan["max_steps"] == 10 and plan["lr"] == pytest.approx(0.05)
    assert "total steps: 10 (2 epochs)" in printed and "lr: 0.05 (0.1 at batch 16, linear scaling)" in printed
    memory = plan["memory_per_rank"]
    # Student and teacher ResNet-18 (2 x 11.2M float32 parameters) plus the queue; gradients and momentum: one copy.
    assert 0.08 < memory["weights_and_buffers"] < 0.1 and 0.04 < memory["gradients"] < 0.05
    assert memory["optimizer_state"] == pytest.approx(memory["gradients"], rel=0.01)  # SGD: one momentum buffer
    assert memory["activations"] > 0 and memory["total"] == pytest.approx(sum(
        v for k, v in memory.items() if k != "total"))
    assert plan["differences_from_paper"][0].startswith("devices: 1 rank(s), paper 8")

    assert main(["pretrain", *recipe, "--trainer.progress_bar", "false", "--trainer.out_dir",
                 str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "recipe: global batch 8 (8 x 1 rank(s)), 10 steps = 2 epochs of 5 steps, lr 0.05 (0.1 at batch 16, " \
           "linear)" in err
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 10
    assert ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.05)
    provenance = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert provenance["recipe"]["max_steps"] == 10 and provenance["recipe"]["lr"] == pytest.approx(0.05)
    assert provenance["recipe"]["resolved"]["trainer.max_steps"] == {"given": "2 epochs", "resolved": 10}


def test_plan_at_a_papers_scale_without_its_data(capsys):
    assert main(["plan", "--config", "gersp_resnet50_paper", "--devices", "8", "--dataset-size", "1281167",
                 "--no-memory"]) == 0
    out = capsys.readouterr().out
    assert "global batch: 256 = 32 per device x 8 device(s) x 1 node(s)" in out
    assert "total steps: 500,400 (100 epochs)" in out and "cosine restarts every 100,080 steps (5 cycles)" in out
    assert "optimizer: SGD, plain momentum 0.9" in out and "differences from the paper's recipe" in out
    assert out.rstrip().endswith("1,281,167 per epoch): none")


@pytest.mark.parametrize(("argv", "message"), [
    (["plan", "--config", "moco_resnet50_paper", "--resume"], "plan does not train"),
    (["plan", "--config", "moco_resnet50_paper", "--dataset-size", "0"], "--dataset-size: expected a positive"),
    (["plan", "--config", "moco_resnet50_paper", "--devices"], "--devices needs a value"),
    (["plan", "--config", "moco_resnet50_paper", "--dataset-size", "100", "--optim.lr_scaling", "linear",
      "--optim.lr_reference_batch", "null"], "optim.lr_scaling: linear needs optim.lr_reference_batch"),
])
def test_plan_bad_input_is_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_step_override_replaces_its_twin_in_epochs():
    from rspretrain.pretrain.config import load_config

    cfg = load_config("cmid_resnet50_paper", ["--trainer.max_steps", "100", "--optim.warmup_steps=5",
                                              "--model.teacher_temp_warmup_fraction", "0.1"])
    assert cfg.trainer.max_steps == 100 and cfg.trainer.max_epochs is None
    assert cfg.optim.warmup_steps == 5 and cfg.optim.warmup_epochs is None
    assert cfg.model["teacher_temp_warmup_epochs"] is None and cfg.model["teacher_temp_warmup_fraction"] == 0.1
    both = load_config("cmid_resnet50_paper", {"trainer.max_steps": 100, "trainer.max_epochs": 3})
    assert both.trainer.max_epochs == 3  # both given: the epochs win, as in a config


@pytest.mark.parametrize(("config", "overrides"), [
    # The paper config names an ImageNet file that is not here: a plan does not need it.
    ("geokr_resnet50_paper", {"model.backbone": "resnet18", "model.image_size": 64, "data.image_size": 64}),
    # CMID's temperature ramp in epochs is read during the measured step.
    ("cmid_resnet50_paper", {"model.backbone": "resnet18", "model.image_size": 64, "data.image_size": 64,
                             "model.queue_size": 256, "views.mask_patch_size": 8}),
])
def test_plan_measures_memory_of_paper_configs_without_their_files(config, overrides):
    from rspretrain.pretrain.config import load_config
    from rspretrain.pretrain.plan import format_plan, plan_run

    plan = plan_run(load_config(config, overrides), config, samples_per_epoch=10_000)
    memory = plan["memory_per_rank"]
    assert memory["activations"] > 0 and memory["weights_and_buffers"] > 0
    assert "memory per rank (estimate)" in format_plan(plan)
