"""The land_cover knowledge term (GeoKR's supervision) on a base: GeoKR's loss, its sparse mean teacher, real Zion
tiles end to end, and the errors for sources without land cover."""

from __future__ import annotations

import pytest
import torch

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.core.rng_state import seed_step
from rspretrain.pretrain import methods
from rspretrain.pretrain.config import load_config
from rspretrain.pretrain.knowledge import parse_terms
from tests.conftest import ZION_RGB

ZION_TILES = {**methods.get_method("geokr").smoke_overrides}
ZION_TILES.pop("model.backbone")
ZION_TILES.pop("model.teacher_intervals")


def _zion(base_config: str, data_root, tmp_path, **more):
    geokr = load_config("geokr_resnet18_zion")
    overrides = {"data.dataset": geokr.data.dataset, "data.dataset_options": dict(geokr.data.dataset_options),
                 "data.root": str(data_root), "data.batch_size": 8, "model.image_size": 32,
                 "trainer.progress_bar": False, "trainer.out_dir": str(tmp_path / "run"), **ZION_TILES, **more}
    return load_config(base_config, overrides)


def test_with_the_sparse_teacher_the_term_is_geokrs_loss_on_the_same_view_and_networks():
    torch.manual_seed(0)
    geokr = methods.create("geokr", num_classes=8, backbone="resnet18", image_size=32, in_chans=4,
                           band_names=("B2", "B3", "B4", "B5")).train()
    term = {"land_cover": {"num_classes": 8, "teacher": "sparse"}}
    moco = methods.create("moco", knowledge=[term], backbone="resnet18", image_size=32, in_chans=4,
                          band_names=("B2", "B3", "B4", "B5"), queue_size=16).train()
    # the term's networks = GeoKR's: student backbone + head, and the teacher's copies of both
    moco.student["backbone"].load_state_dict(geokr.student["backbone"].state_dict())
    moco.student["land_cover"].load_state_dict(geokr.student["classifier"].state_dict())
    teacher = moco.knowledge_modules["land_cover_teacher"].module
    teacher["backbone"].load_state_dict(geokr.teacher.module["backbone"].state_dict())
    teacher["land_cover"].load_state_dict(geokr.teacher.module["classifier"].state_dict())
    batch = geokr.example_batch(6, 32, torch.Generator().manual_seed(1))
    seed_step(0, 0, 0)
    (view,) = geokr.make_views(batch)
    seed_step(0, 0, 0)
    (land_cover,) = moco.knowledge
    (term_view,) = land_cover.make_views(moco, batch)
    assert torch.equal(view, term_view)  # GeoKR's recipe, the same draws
    expected, logs = geokr.loss_from_views([view], batch)
    loss, term_logs = land_cover.loss(moco, None, [moco.student["backbone"](term_view)], batch)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert float(term_logs["loss_land_cover"]) == pytest.approx(float(logs["loss_cls"]), rel=1e-5)
    assert float(term_logs["loss_land_cover_consistency"]) == pytest.approx(float(logs["loss_consistency"]), rel=1e-5)
    loss.backward()
    assert moco.student["land_cover"].weight.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in moco.knowledge_modules.parameters())  # never optimised


def test_without_a_teacher_the_term_is_the_soft_target_cross_entropy():
    from rspretrain.losses.soft_target import soft_target_cross_entropy

    torch.manual_seed(0)
    moco = methods.create("moco", knowledge=[{"land_cover": {"num_classes": 5, "teacher": "none"}}],
                          backbone="resnet18", image_size=32, queue_size=16).train()
    assert "land_cover_teacher" not in moco.knowledge_modules
    batch = moco.example_batch(4, 32, torch.Generator().manual_seed(0))
    loss, logs = moco.step_loss(batch)  # the base + the term in one student forward
    (term,) = moco.knowledge
    pooled = torch.randn(4, moco.backbone.num_features)
    term.make_views(moco, batch)
    alone, _ = term.loss(moco, None, [pooled], batch)
    assert float(alone) == pytest.approx(float(soft_target_cross_entropy(moco.student["land_cover"](pooled),
                                                                         batch["label"])), rel=1e-6)
    assert float(loss) == pytest.approx(float(logs["loss_contrastive"]) + float(logs["loss_land_cover"]), rel=1e-5)


def test_moco_with_land_cover_trains_on_zion_tiles_and_its_teacher_follows_the_sparse_schedule(tmp_path, data_root):
    from rspretrain.pretrain.run import load_checkpoint, load_method, pretrain

    # intervals [1, 1] at batch 8 -> a period of 2: the update for step 1 is made before step 2's forward
    term = {"land_cover": {"weight": 1.0, "teacher": "sparse", "teacher_intervals": [1, 1]}}
    cfg = _zion("moco_resnet18_eurosat", data_root, tmp_path, **{
        "model.knowledge": [term], "model.queue_size": 16, "trainer.max_steps": 3, "trainer.log_every_n_steps": 1})
    final = pretrain(cfg)
    state = load_checkpoint(final)["state_dict"]
    method = load_method(final)
    (loaded,) = method.knowledge
    assert loaded.name == "land_cover" and loaded.num_classes == 8 and loaded.class_names[0] == "Water"
    teacher = method.knowledge_modules["land_cover_teacher"].module
    assert any(k.startswith("knowledge_modules.land_cover_teacher.") for k in state)
    assert not torch.equal(teacher["land_cover"].weight, method.student["land_cover"].weight)
    import csv

    (metrics,) = (tmp_path / "run").rglob("metrics.csv")
    rows = [r for r in csv.DictReader(metrics.open()) if r.get("train/land_cover_teacher_momentum")]
    # GeoKR's rule (update after iteration i when i % period == 1), made at the start of the next step
    assert [float(r["train/land_cover_teacher_momentum"]) for r in rows] == pytest.approx([1.0, 0.95, 1.0])
    assert all(float(r["train/loss_land_cover"]) > 0 for r in rows)


def test_sources_without_land_cover_are_refused_naming_the_term(tmp_path, data_root):
    from rspretrain.pretrain.run import build

    cfg = load_config("moco_resnet18_eurosat", {
        "data.root": str(data_root), "data.max_per_class": 4, "data.batch_size": 8, "model.image_size": 32,
        "model.knowledge": [{"land_cover": {}}]})
    with pytest.raises(DataError, match="knowledge term land_cover: data.dataset 'eurosat' has no land-cover "
                                        "proportions"):
        build(cfg)
    both = load_config("moco_resnet18_eurosat", {
        "data.root": str(data_root), "data.max_per_class": 4, "data.batch_size": 8, "model.image_size": 32,
        "model.knowledge": [{"land_cover": {}}, {"natural_images": {"dataset": "cifar10"}}]})
    with pytest.raises(DataError, match="knowledge term land_cover: data.dataset 'eurosat' has no land-cover "):
        build(both)
    geokr = _zion("geokr_resnet18_zion", data_root, tmp_path, **{"data.natural_dataset": "cifar10"})
    with pytest.raises(ConfigError, match="data.natural_dataset 'cifar10': method 'geokr' has no natural_images term"):
        build(geokr)
    # land-cover tiles + natural images on a base without the term: refused, not trained as plain MoCo
    plain = _zion("moco_resnet18_eurosat", data_root, tmp_path, **{"data.dataset": ZION_RGB,
                                                                   "data.natural_dataset": "cifar10"})
    with pytest.raises(ConfigError, match="data.natural_dataset is the source of the natural_images knowledge term"):
        build(plain)
    with pytest.raises(ConfigError, match="teacher 'mean' is not one of sparse, ema, none"):
        parse_terms([{"land_cover": {"teacher": "mean"}}])
    with pytest.raises(ConfigError, match="unknown knowledge term 'landcover'; known terms: land_cover, natural_images"):
        parse_terms(["landcover"])


def test_land_cover_and_natural_images_together_on_zion_tiles(tmp_path, data_root):
    """The issue's example: both terms on one base; each tile keeps its land-cover proportions beside the paired
    natural image and its label, and each term gets its own head and classes."""
    from rspretrain.pretrain.run import build, load_method, pretrain

    terms = [{"natural_images": {"weight": 1.0, "dataset": "cifar10"}},
             {"land_cover": {"weight": 1.0, "teacher": "sparse", "teacher_intervals": [1, 1]}}]
    cfg = _zion("moco_resnet18_eurosat", data_root, tmp_path, **{
        "data.dataset": ZION_RGB, "model.knowledge": terms, "model.queue_size": 16, "trainer.max_steps": 2,
        "trainer.log_every_n_steps": 1})
    model, dm, _ = build(cfg)
    batch = next(iter(dm.train_dataloader()))
    assert batch["label"].shape == (8, 8) and torch.allclose(batch["label"].sum(dim=1), torch.ones(8))
    assert batch["natural_image"].shape[:2] == (8, 3) and int(batch["natural_label"].max()) < 10
    natural, land_cover = model.knowledge
    assert (natural.num_classes, land_cover.num_classes) == (10, 8) and land_cover.class_names[0] == "Water"
    assert model.student["classifier"].out_features == 10 and model.student["land_cover"].out_features == 8
    final = pretrain(cfg)
    import csv

    (metrics,) = (tmp_path / "run").rglob("metrics.csv")
    rows = [r for r in csv.DictReader(metrics.open()) if r.get("train/loss_land_cover")]
    assert len(rows) == 2 and all(float(r["train/loss_ce"]) > 0 for r in rows)
    assert [t.name for t in load_method(final).knowledge] == ["natural_images", "land_cover"]
