"""GeoKR: loss composition, teacher forward and schedule, export choice; end to end on real Zion tiles."""

from __future__ import annotations

import csv
import json

import lightning as L
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rspretrain.apps.cli import main
from rspretrain.core.errors import ConfigError, DataError
from rspretrain.losses.soft_target import geokr_consistency, soft_target_cross_entropy
from rspretrain.pretrain.config import load_config
from rspretrain.pretrain.export import load_backbone, read_metadata
from rspretrain.pretrain.methods import GeoKR, create
from rspretrain.pretrain.run import load_checkpoint, load_method, pretrain

BANDS = ("b2", "b3", "b4", "b5")


def _model(**kw):
    torch.manual_seed(0)
    args = {"backbone": "resnet10t", "in_chans": 4, "image_size": 32, "num_classes": 8, "band_names": BANDS}
    args.update(kw)
    return GeoKR(**args)


def _batch(n=8, k=8):
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.rand(n, 4, 32, 32, generator=g) * 30000,
        "label": torch.softmax(3 * torch.randn(n, k, generator=g), dim=1),
    }


def test_defaults_are_the_official_recipe():
    model = create("geokr", in_chans=4, band_names=BANDS, num_classes=8)
    assert model.optim_cfg.name == "adam" and model.optim_cfg.lr == 1e-3 and model.optim_cfg.weight_decay == 0
    assert model.optim_cfg.schedule == "step" and model.optim_cfg.step_gamma == 0.9 and model.optim_cfg.step_every == 0
    v = model.views_cfg
    assert (v.hflip_p, v.vflip_p, v.rot90_p, v.brightness, v.contrast, v.saturation, v.hue) == (
        0.5, 0.5, 0.5, 0.3, 0.5, 0.5, 0.3)
    assert model.views.rgb == (2, 1, 0)  # b4 red, b3 green, b2 blue
    assert isinstance(model.student["classifier"], torch.nn.Linear) and model.student["classifier"].out_features == 8
    assert model.export_from == "teacher"
    assert model.teacher.module["classifier"].weight.data_ptr() != model.student["classifier"].weight.data_ptr()


def test_loss_is_soft_ce_plus_consistency_on_the_same_view():
    model = _model()
    batch = _batch()
    views = model.make_views(batch)
    assert len(views) == 1
    seen = []
    handle = model.teacher.module["backbone"].register_forward_hook(lambda m, i, o: seen.append(i[0]))
    loss, logs = model.loss_from_views(views, batch)
    handle.remove()
    assert torch.equal(seen[0], views[0])  # the teacher sees exactly the student's input
    logits_s = model.student["classifier"](model.student["backbone"](views[0]))
    logits_t = model.teacher_logits(views[0])
    cls = soft_target_cross_entropy(logits_s, batch["label"])
    cons = geokr_consistency(logits_s, logits_t, "ce")
    assert logs["loss_cls"].item() == pytest.approx(cls.item(), rel=1e-4)
    assert logs["loss_consistency"].item() == pytest.approx(cons.item(), rel=1e-4)
    assert loss.item() == pytest.approx(logs["loss_cls"].item() + logs["loss_consistency"].item(), rel=1e-6)
    loss.backward()
    grads = [p.grad for p in model.student.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    weighted = _model(consistency_weight=0.0, consistency="kl")
    loss0, logs0 = weighted.loss_from_views(views, batch)
    assert loss0.item() == pytest.approx(logs0["loss_cls"].item(), abs=1e-7)
    assert logs0["loss_consistency"].item() == pytest.approx(0.0, abs=1e-5)  # KL of identical networks


def test_teacher_follows_the_sparse_schedule_after_the_step():
    model = _model(teacher_intervals=(8, 8), teacher_batch_size=16)  # periods of 8: updates after steps 1, 9, 17
    teacher_w = model.teacher.module["classifier"].weight
    for step in range(1, 18):
        with torch.no_grad():
            model.student["classifier"].weight.add_(0.1)
        before = teacher_w.clone()
        momentum = model.update_teacher(step, batch_size=8)  # teacher_batch_size overrides the batch
        if step in (1, 9, 17):
            assert momentum == 0.95
            assert torch.allclose(teacher_w, 0.95 * before + 0.05 * model.student["classifier"].weight)
        else:
            assert momentum == 1.0 and torch.equal(teacher_w, before)
    assert model.teacher_updates(17, 8) == 3
    official = _model()
    assert official.schedule_for(8).update_steps(70_000) == [1, 1001, 21001, 41001, 61001]
    ema = _model(teacher_schedule="ema", ema_momentum=0.5)
    with torch.no_grad():
        ema.student["classifier"].weight.add_(1.0)
    before = ema.teacher.module["classifier"].weight.clone()
    assert ema.update_teacher(2, 8) == 0.5
    assert torch.allclose(ema.teacher.module["classifier"].weight,
                          0.5 * before + 0.5 * ema.student["classifier"].weight)


def test_export_choice_and_bad_input():
    model = _model()
    with torch.no_grad():
        next(model.student["backbone"].parameters()).add_(1.0)
    assert model.backbone_to_export() is model.teacher.module["backbone"]
    assert _model(export="student").backbone_to_export() is not None
    student_export = _model(export="student")
    assert student_export.backbone_to_export() is student_export.student["backbone"]
    assert model.export_metadata()["exported_from"] == "teacher"
    with pytest.raises(ConfigError, match="model.export"):
        _model(export="both")
    with pytest.raises(ConfigError, match="model.consistency"):
        _model(consistency="mse")
    with pytest.raises(ConfigError, match="model.teacher_schedule"):
        _model(teacher_schedule="cosine")
    with pytest.raises(ConfigError, match="3 class names"):
        _model(class_names=("a", "b", "c"))
    batch = {"image": torch.rand(4, 4, 32, 32), "label": torch.tensor([0, 1, 2, 3])}
    with pytest.raises(DataError, match=r"geokr needs land-cover proportions \(B, 8\).*landcover:"):
        model.loss_from_views(model.make_views(batch), batch)


# -- end to end on real Zion tiles ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    tmp = tmp_path_factory.mktemp("geokr")
    # a 4 x 4 block of 32 px tiles in the scene's north-west corner: 16 tiles, 2 steps per epoch at batch 8
    x0, y1 = 301905.0, 4154085.0
    size = 4 * 32 * 30.0
    cfg = load_config("geokr_resnet18_zion", {
        "data.root": str(data_root),
        "data.batch_size": 8,
        "data.dataset_options.tile": 32,
        "data.dataset_options.stride": 32,
        "data.dataset_options.within": [x0, y1 - size, x0 + size, y1],
        "model.image_size": 32,
        "model.backbone": "resnet10t",  # a smaller real ResNet keeps the default suite fast
        "model.teacher_intervals": [4, 4],  # periods int(4 / 8 * 16) = 8: teacher updates after steps 1 and 9
        "optim.step_every": 0,  # StepLR per epoch (2 steps)
        "trainer.max_steps": 10,
        "trainer.ckpt_every_n_steps": 10,
        "trainer.log_every_n_steps": 1,
        "trainer.out_dir": str(tmp / "run"),
        "trainer.progress_bar": False,
    })
    torch.manual_seed(0)
    watcher = _TeacherWatcher()
    return pretrain(cfg, callbacks=[watcher]), tmp, watcher


class _TeacherWatcher(L.Callback):
    """Records after which 1-based optimiser steps the teacher's weights actually changed."""

    def __init__(self) -> None:
        self.changed_after: list[int] = []
        self.previous: torch.Tensor | None = None

    def _snapshot(self, pl_module) -> torch.Tensor:
        return torch.cat([p.detach().flatten().clone() for p in pl_module.teacher.module.parameters()])

    def on_train_start(self, trainer, pl_module) -> None:
        self.previous = self._snapshot(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = self._snapshot(pl_module)
        if not torch.equal(now, self.previous):
            self.changed_after.append(trainer.global_step)  # counts the step just done here
        self.previous = now


def test_sparse_teacher_changes_exactly_after_the_documented_iterations(trained):
    """Through a real Trainer: with periods of 8 the teacher moves after iterations 1 and 9 only (i % 8 == 1)."""
    *_, watcher = trained
    assert watcher.changed_after == [1, 9]


def test_pretrain_checkpoint_logs(trained):
    final, *_ = trained
    ckpt = load_checkpoint(final)
    assert ckpt["global_step"] == 10 and ckpt["rspretrain"]["method"] == "geokr"
    with open(final.parent.parent / "logs" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    assert len(rows) == 10
    assert [float(r["train/teacher_updates"]) for r in rows] == [0] + [1] * 8 + [2]
    lrs = [float(r["train/lr"]) for r in rows]
    assert lrs[0] == pytest.approx(1e-3) and lrs[2] == pytest.approx(9e-4) and lrs[9] == pytest.approx(1e-3 * 0.9**4)
    assert all(np.isfinite(float(r["train/loss"])) for r in rows)
    model = load_method(final)
    assert model.num_classes == 8 and model.class_names[3] == "Forest"
    # two sparse updates: the teacher sits between its start (the initial student) and the current student
    t = model.teacher.module["classifier"].weight
    s = model.student["classifier"].weight
    assert not torch.allclose(t, s)


def test_export_teacher_with_band_metadata_and_student_on_request(trained, capsys):
    final, tmp, _ = trained
    model = load_method(final)
    assert main(["export", str(final), "--to", str(tmp / "teacher.safetensors")]) == 0
    meta = read_metadata(tmp / "teacher.safetensors")
    assert meta["band_names"] == list(BANDS) and meta["in_chans"] == 4 and meta["exported_from"] == "teacher"
    assert len(meta["mean"]) == len(meta["std"]) == 4 and meta["value_scale"] == 65535.0
    assert meta["mean"] == pytest.approx(list(model.mean)) and all(0.0 < s < 0.2 for s in meta["std"])
    assert meta["land_cover_classes"][3] == "Forest" and meta["input_size"] == [4, 32, 32]
    assert json.loads((tmp / "teacher.json").read_text())["band_names"] == list(BANDS)
    weights = load_file(str(tmp / "teacher.safetensors"))
    teacher_state = model.teacher.module["backbone"].model.state_dict()
    student_state = model.student["backbone"].model.state_dict()
    assert weights.keys() == teacher_state.keys() and all(torch.equal(weights[k], teacher_state[k]) for k in weights)
    backbone = load_backbone(tmp / "teacher.safetensors", band_names=list(BANDS))
    assert backbone(torch.zeros(2, 4, 32, 32)).shape == (2, 512)
    assert main(["export", str(final), "--to", str(tmp / "student.safetensors"), "--network", "student"]) == 0
    student = load_file(str(tmp / "student.safetensors"))
    assert all(torch.equal(student[k], student_state[k]) for k in student)
    assert not all(torch.equal(student[k], weights[k]) for k in student)
    assert read_metadata(tmp / "student.safetensors")["exported_from"] == "student"
    assert "exported teacher backbone" in capsys.readouterr().out


def test_landcover_labels_command(tmp_path, data_root, capsys):
    zion = data_root / "zion_landsat8_nlcd2011"
    images = ",".join(str(zion / f"landsat8_LC80380342015230_b{b}.tif") for b in (2, 3, 4, 5))
    out = tmp_path / "labels.parquet"
    code = main(["landcover-labels", "--images", images, "--landcover", str(zion / "nlcd2011.tif"), "--scheme",
                 "nlcd8", "--tile", "64", "--stride", "48", "--out", str(out)])
    assert code == 0 and out.is_file()
    text = capsys.readouterr().out
    assert "667 tiles labelled with 8 nlcd8 classes" in text and "0 outside the land-cover extent" in text
    from rspretrain.data import read_land_cover_labels

    labels = read_land_cover_labels(out)
    assert len(labels) == 667 and labels.meta["land_cover"].endswith("nlcd2011.tif")
    # no overlap: a clear one-line error naming the product file, exit status 2
    import rasterio
    from rasterio.transform import from_origin

    far = tmp_path / "far.tif"
    with rasterio.open(far, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8", crs="EPSG:32612",
                       transform=from_origin(900000, 3000000, 30, 30)) as dst:
        dst.write(np.full((1, 8, 8), 42, np.uint8))
    code = main(["landcover-labels", "--images", images, "--landcover", str(far), "--scheme", "nlcd8",
                 "--out", str(tmp_path / "x.parquet")])
    err = capsys.readouterr().err
    assert code == 2 and "far.tif: land-cover product does not overlap" in err and "Traceback" not in err


def test_init_weights_from_a_local_timm_file(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(3)
    rgb = timm.create_model("resnet18", pretrained=False, num_classes=1000)  # as an ImageNet file would hold
    path = tmp_path / "resnet18_rgb.safetensors"
    save_file({k: v.contiguous() for k, v in rgb.state_dict().items()}, str(path))
    model = _model(backbone="resnet18", init_weights=str(path))
    state = model.student["backbone"].model.state_dict()
    assert torch.equal(state["layer3.1.conv2.weight"], rgb.state_dict()["layer3.1.conv2.weight"])
    conv1 = state["conv1.weight"]
    assert conv1.shape == (64, 4, 7, 7)
    # timm's adapt_input_conv: RGB filters repeated over 4 bands and rescaled by 3/4
    expected = rgb.conv1.weight.repeat(1, 2, 1, 1)[:, :4] * (3 / 4)
    assert torch.allclose(conv1, expected, atol=1e-6)
    teacher = model.teacher.module["backbone"].model.state_dict()
    assert torch.equal(teacher["conv1.weight"], conv1)  # the teacher starts from the same weights
    with pytest.raises(DataError, match="absent.safetensors: backbone weight file not found"):
        _model(init_weights=str(tmp_path / "absent.safetensors"))
    with pytest.raises(DataError, match="weights do not fit resnet50"):
        _model(backbone="resnet50", init_weights=str(path))


def test_shipped_configs_parse():
    paper = load_config("geokr_resnet50_paper")
    assert paper.method == "geokr" and paper.data.batch_size == 8 and paper.model["backbone"] == "resnet50"
    assert paper.model["teacher_intervals"] == [500, 10500, 20500, 30500] and paper.model["teacher_alpha"] == 0.95
    assert paper.optim.name == "adam" and paper.optim.step_every_epochs == 1 and paper.optim.step_gamma == 0.9
    assert paper.data.dataset_options["scheme"] == "globeland30_8" and paper.data.dataset_options["stride"] == 200
    zion = load_config("geokr_resnet18_zion")
    assert zion.data.dataset.startswith("landcover:") and zion.data.dataset_options["scheme"] == "nlcd8"
    assert zion.views.rot90_p == 0.5 and zion.views.contrast == 0.5
