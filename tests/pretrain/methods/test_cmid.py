import csv

import pytest
import timm
import torch
from torch import nn

from rspretrain.core.errors import ConfigError
from rspretrain.pretrain.methods import CMID

SMALL = {
    "resnet18": None,
    "swin_tiny_patch4_window7_224": {"depths": [1, 1, 1, 1], "embed_dim": 24, "num_heads": [1, 1, 1, 1]},
    "vit_small_patch16_224": {"depth": 2, "embed_dim": 48, "num_heads": 2},
}


def _model(arch="resnet18", **kw):
    torch.manual_seed(0)
    args = {"backbone": arch, "backbone_kwargs": SMALL[arch], "in_chans": 3, "image_size": 64, "queue_size": 64,
            "proj_hidden_dim": 64, "local_hidden_dim": 64, "local_bottleneck_dim": 16, "num_prototypes": 32}
    args.update(kw)
    return CMID(**args)


def _batch(n=4):
    g = torch.Generator().manual_seed(0)
    return {"image": torch.randint(0, 256, (n, 3, 72, 72), dtype=torch.uint8, generator=g)}


@pytest.mark.parametrize("arch", list(SMALL))
def test_same_code_path_trains_a_cnn_and_transformers(arch):
    model = _model(arch)
    batch = _batch()
    loss, logs = model.loss_from_views(model.make_views(batch), batch)
    assert torch.isfinite(loss)
    terms = logs["loss_mim"] + logs["loss_global"] + logs["loss_local"]
    assert loss.item() == pytest.approx(terms.item(), rel=1e-5)
    assert logs["loss_mim"].item() == pytest.approx((logs["loss_mim_spatial"] + logs["loss_mim_frequency"]).item())
    loss.backward()
    for name in ("backbone", "mask_token", "decoder", "projector", "local_head"):
        grads = [p.grad for p in model.student[name].parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), name
        assert sum(g.abs().sum() for g in grads) > 0, name
    has_bn = any(isinstance(m, nn.BatchNorm1d) for m in model.student["local_head"].modules())
    assert has_bn == (arch == "resnet18")  # BN in the prototype head for CNNs only


def test_multispectral_bands_without_rgb():
    model = _model(in_chans=4, band_names=["B2", "B8", "B11", "B12"], image_size=32)
    assert model.views.rgb is None  # no colour ops; noise, blur, brightness/contrast still apply
    batch = {"image": torch.randint(0, 10000, (4, 4, 40, 40), generator=torch.Generator().manual_seed(0)).float()}
    loss, _ = model.loss_from_views(model.make_views(batch), batch)
    assert torch.isfinite(loss) and model.student["decoder"][0].out_channels == 32 * 32 * 4  # rebuilds all 4 bands


def test_teacher_has_no_mask_token_no_decoder_and_no_gradient():
    model = _model()
    assert set(model.teacher.module) == {"backbone", "projector", "local_head"}
    batch = _batch()
    loss, _ = model.loss_from_views(model.make_views(batch), batch)
    loss.backward()
    assert all(not p.requires_grad and p.grad is None for p in model.teacher.parameters())
    # The optimiser sees the student (with its mask token) and nothing of the teacher.
    optimizer = model.configure_optimizers()["optimizer"]
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert id(model.student["mask_token"].token) in optimised
    assert not optimised & {id(p) for p in model.teacher.parameters()}
    assert type(optimizer).__name__ == "SGD"  # the default optim section; the configs choose Adan


def test_teacher_sees_clean_views_and_student_masked_ones():
    model = _model()
    batch = _batch()
    views = model.make_views(batch)
    seen = {"student": [], "teacher": []}
    model.student["backbone"].model.conv1.register_forward_hook(lambda m, i, o: seen["student"].append(i[0]))
    model.teacher.module["backbone"].model.conv1.register_forward_hook(lambda m, i, o: seen["teacher"].append(i[0]))
    model.loss_from_views(views, batch)
    assert [torch.equal(a, b) for a, b in zip(seen["student"], [views.masked_a, views.masked_b])] == [True, True]
    assert [torch.equal(a, b) for a, b in zip(seen["teacher"], [views.view_a, views.view_b])] == [True, True]


@pytest.mark.parametrize("weight,absent,log_key", [
    ("mim_weight", "decoder", "loss_mim"), ("global_weight", "projector", "loss_global"),
    ("local_weight", "local_head", "loss_local"),
])
def test_a_zero_weight_skips_its_branch(monkeypatch, weight, absent, log_key):
    import rspretrain.pretrain.methods.cmid as cmid_module

    def fail(*args, **kwargs):
        raise AssertionError("a skipped branch ran")

    if weight == "local_weight":
        monkeypatch.setattr(cmid_module, "position_match", fail)
    elif weight == "mim_weight":
        monkeypatch.setattr(cmid_module, "masked_frequency_loss", fail)
        monkeypatch.setattr(cmid_module, "focal_l1_loss", fail)
    else:
        monkeypatch.setattr(cmid_module, "info_nce", fail)
    model = _model(**{weight: 0.0})
    assert absent not in model.student and absent not in model.teacher.module
    batch = _batch()
    loss, logs = model.loss_from_views(model.make_views(batch), batch)
    assert log_key not in logs and torch.isfinite(loss)
    assert (weight == "global_weight") == (not hasattr(model, "queue"))
    with pytest.raises(ConfigError, match="nothing to train"):
        _model(mim_weight=0, global_weight=0, local_weight=0)


def test_loss_weights_scale_their_terms():
    batch = _batch()
    base = _model()
    views = base.make_views(batch)
    weighted = _model(mim_weight=2.0, global_weight=0.5, local_weight=3.0)
    loss, logs_w = weighted.loss_from_views(views, batch)
    expected = 2 * logs_w["loss_mim"] + 0.5 * logs_w["loss_global"] + 3 * logs_w["loss_local"]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_both_keys_enter_the_queue_once_per_step():
    model = _model()
    batch = _batch(4)
    model.loss_from_views(model.make_views(batch), batch)
    assert int(model.queue.pointer) == 8
    model.loss_from_views(model.make_views(batch), batch)
    assert int(model.queue.pointer) == 16


def test_teacher_ema_follows_the_cosine_momentum_endpoints():
    model = _model()
    model.schedule_total_steps = 10
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(0.5)
    t_before = model.teacher.module["backbone"].model.conv1.weight.clone()
    s = model.student["backbone"].model.conv1.weight
    assert model.update_teacher(0) == pytest.approx(0.996)
    assert torch.allclose(model.teacher.module["backbone"].model.conv1.weight, 0.996 * t_before + 0.004 * s)
    t_mid = model.teacher.module["backbone"].model.conv1.weight.clone()
    assert model.update_teacher(10) == pytest.approx(1.0)
    assert torch.equal(model.teacher.module["backbone"].model.conv1.weight, t_mid)
    assert model.update_teacher(5) == pytest.approx(0.998)


def test_mask_and_grid_follow_input_size_and_backbone():
    r = _model("resnet18")
    assert (r.views.masker.mask_patch_size, r.views.masker.grid, r.views.feature_grid, r.num_matches) == (8, 8, 2, 2)
    v = _model("vit_small_patch16_224")
    assert (v.views.masker.mask_patch_size, v.views.feature_grid, v.num_matches) == (16, 4, 7)
    assert v.backbone.timm_kwargs["global_pool"] == "avg"  # pooled export = the global branch's GAP
    big = _model("resnet18", image_size=224)
    assert (big.views.masker.mask_patch_size, big.views.masker.num_masked, big.views.feature_grid,
            big.num_matches) == (32, 30, 7, 20)
    with pytest.raises(ConfigError, match="output stride"):
        _model("resnet18", image_size=48)
    with pytest.raises(ConfigError, match="token grid"):
        _model("resnet18", views={"mask_patch_size": 2})


# -- end to end: config -> Lightning -> checkpoint -> export -> timm -------------------------------------
def _cfg(tmp_path, data_root, config="cmid_resnet18_eurosat", steps=3, **extra):
    from rspretrain.pretrain.config import load_config

    overrides = {
        "data.root": str(data_root), "data.max_per_class": 4, "data.batch_size": 8, "model.image_size": 32,
        "model.queue_size": 64, "model.proj_hidden_dim": 64, "model.local_hidden_dim": 64,
        "model.num_prototypes": 32, "trainer.max_steps": steps, "trainer.progress_bar": False,
        "trainer.log_every_n_steps": 1, "trainer.ckpt_every_n_steps": 2, "trainer.out_dir": str(tmp_path / "run"),
        **extra,
    }
    return load_config(config, overrides)


def _rows(run_dir):
    with open(run_dir / "logs" / "metrics.csv") as f:
        return [r for r in csv.DictReader(f) if r.get("train/loss")]


@pytest.mark.parametrize("config,extra", [
    ("cmid_resnet18_eurosat", {}),
    ("cmid_swin_tiny_eurosat", {"model.backbone_kwargs": SMALL["swin_tiny_patch4_window7_224"], "trainer.max_steps": 2}),
])
def test_pretrain_writes_checkpoint_and_exports_a_timm_student(tmp_path, data_root, config, extra):
    from rspretrain.pretrain.export import export_backbone, load_backbone, read_metadata
    from rspretrain.pretrain.run import load_checkpoint, load_method, pretrain

    cfg = _cfg(tmp_path, data_root, config, **extra)
    assert cfg.optim.name == "adan" and cfg.views.blur_p == 1.0
    final = pretrain(cfg)
    ckpt = load_checkpoint(final)
    assert ckpt["global_step"] == cfg.trainer.max_steps and ckpt["rspretrain"]["method"] == "cmid"
    assert type(ckpt["optimizer_states"][0]["state"][0]).__name__ == "dict"
    rows = _rows(final.parent.parent)
    for key in ("train/loss_mim", "train/loss_global", "train/loss_local", "train/teacher_temp", "train/momentum"):
        assert all(r[key] for r in rows), key
    method = load_method(final)
    # the teacher was EMA-updated after each of the 3 optimiser steps: it is no longer a copy of
    # the initial student, and it follows the trained one
    init = CMID(**dict(method.hparams))
    name = next(n for n, _ in method.teacher.module["backbone"].named_parameters())
    teacher = dict(method.teacher.module["backbone"].named_parameters())[name]
    assert not torch.equal(teacher, dict(init.student["backbone"].named_parameters())[name])
    path = export_backbone(method, tmp_path / "bb.safetensors")
    meta = read_metadata(path)
    assert meta["exported_from"] == "student" and meta["method"] == "cmid"
    model = load_backbone(path)
    assert isinstance(model, timm.models.ResNet if "resnet" in config else timm.models.SwinTransformer)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), method.backbone.eval()(x), atol=1e-5)
    assert not any("mask_token" in k or "token" == k for k in model.state_dict())


def test_resume_restores_centre_queue_teacher_and_temperature_schedule(tmp_path, data_root):
    from rspretrain.pretrain.run import load_checkpoint, pretrain

    def cfg(steps):  # SGD: the optimiser is not what this test is about, and Adan's step is slow on CPU
        return _cfg(tmp_path, data_root, steps=steps, **{"optim.name": "sgd", "model.teacher_temp_warmup_fraction": 0.5})

    first = load_checkpoint(pretrain(cfg(2)))
    state = first["state_dict"]
    assert "local_loss.center" in state and state["local_loss.center"].abs().sum() > 0
    assert int(state["queue.pointer"]) == (2 * 2 * 8) % 64
    resumed = load_checkpoint(pretrain(cfg(3), resume=True))
    assert resumed["global_step"] == 3
    assert int(resumed["state_dict"]["queue.pointer"]) == (3 * 2 * 8) % 64  # continued, not restarted at 0
    assert not torch.equal(resumed["state_dict"]["local_loss.center"], state["local_loss.center"])
    name = "teacher.module.backbone.model.conv1.weight"
    assert not torch.equal(resumed["state_dict"][name], state[name])  # the teacher kept moving from its state
    rows = {int(r["step"]): float(r["train/teacher_temp"]) for r in _rows(tmp_path / "run")}
    # tau_t warms up over half the steps: 0.04 at step 0; the resumed run's step 2 is past the
    # warm-up (a schedule restarted at resume would log 0.04 again)
    assert rows[0] == pytest.approx(0.04)
    assert rows[2] == pytest.approx(0.07)


def test_cell_matching_official_grids_views_as_the_released_code():
    from rspretrain.views.crop_geometry import cell_centres, released_code_boxes

    model = _model(cell_matching="official")
    torch.manual_seed(3)
    images = _batch()["image"]
    state = torch.get_rng_state()
    views = model.views(images)
    torch.set_rng_state(state)  # the same draws through the geometric path
    model.views.cell_matching = "geometric"
    geometric = model.views(images)
    assert torch.equal(views.view_a, geometric.view_a)  # pixels are the same, only the grid differs
    # Recover each view's box from the geometric centres (first and last cell), then grid it as released.
    for official, true in ((views.centres_a, geometric.centres_a), (views.centres_b, geometric.centres_b)):
        g = model.views.feature_grid
        span = (true[:, -1] - true[:, 0]).abs() * g / (g - 1)  # (w, h)
        x0y0 = torch.minimum(true[:, 0], true[:, -1]) - span / (2 * g)
        boxes = torch.cat([x0y0, span], dim=1)
        flip = true[:, 0, 0] > true[:, -1, 0]
        expected = cell_centres(released_code_boxes(boxes, 72, 72), flip, g)
        torch.testing.assert_close(official, expected, rtol=0, atol=1e-3)


def test_cell_matching_and_epoch_ramp_bad_values():
    with pytest.raises(ConfigError, match="model.cell_matching: 'random'"):
        _model(cell_matching="random")
    model = _model(teacher_temp_warmup_epochs=5)
    model.schedule_total_steps = 100
    with pytest.raises(ConfigError, match="teacher_temp_warmup_epochs: the epoch length is unknown"):
        model.current_teacher_temperature()


def test_teacher_temperature_ramp_in_epochs():
    model = _model(teacher_temp_warmup_epochs=5, warmup_teacher_temp=0.04, teacher_temp=0.07)
    model.schedule_total_steps, model.steps_per_epoch = 200, 10  # the ramp is 50 steps, a quarter of the run
    assert model.current_teacher_temperature() == pytest.approx(0.04)  # step 0 (no trainer)
    assert model.teacher_temperature.warmup_fraction == pytest.approx(0.25)
    ramp = model.teacher_temperature
    assert ramp(25, 200) == pytest.approx(0.055) and ramp(50, 200) == pytest.approx(0.07)
    assert ramp(150, 200) == pytest.approx(0.07)
