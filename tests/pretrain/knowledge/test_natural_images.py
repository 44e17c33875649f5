"""The natural_images knowledge term (GeRSP's supervised branch) on every base that takes terms, its config and its
data source."""

from __future__ import annotations

import pytest
import torch

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.pretrain import methods
from rspretrain.pretrain.config import load_config
from rspretrain.pretrain.knowledge import TERMS, parse_terms

BASES = ["moco", "byol", "cmid"]
TERM = [{"natural_images": {"weight": 0.5, "num_classes": 10}}]


def _model(name: str, knowledge=TERM, **kwargs):
    torch.manual_seed(0)
    cls = methods.get_method(name)
    smoke = {k.split(".", 1)[1]: v for k, v in cls.smoke_overrides.items() if k.startswith("model.")}
    return methods.create(name, backbone="resnet18", image_size=32, knowledge=knowledge, **{**smoke, **kwargs}).train()


@pytest.mark.parametrize("name", BASES)
def test_the_term_trains_its_classifier_in_the_bases_one_student_forward(name):
    model = _model(name)
    sizes = []
    bn = model.backbone.model.bn1
    handle = bn.register_forward_hook(lambda m, inp, out: sizes.append(inp[0].shape[0]))
    batch = model.example_batch(4, 40, torch.Generator().manual_seed(1))
    loss, logs = model.step_loss(batch)
    handle.remove()
    assert sizes[0] == 8  # the first student forward: 4 RS query views + 4 natural views (shared BatchNorm)
    assert {"loss_ce", "natural_accuracy"} <= set(logs) and torch.isfinite(loss)
    own = {"moco": "loss_contrastive", "byol": "loss_byol", "cmid": "loss_cmid"}[name]
    assert float(loss.detach()) == pytest.approx(float(logs[own]) + 0.5 * float(logs["loss_ce"]), rel=1e-5)
    loss.backward()
    assert model.student["classifier"].weight.grad.abs().sum() > 0
    assert not any("classifier" in key for key in model.teacher.state_dict())  # outside every teacher


def test_weight_zero_leaves_the_bases_loss():
    batch = _model("moco").example_batch(4, 40, torch.Generator().manual_seed(1))
    loss, logs = _model("moco", [{"natural_images": {"weight": 0.0, "num_classes": 10}}]).step_loss(batch)
    assert float(loss) == float(logs["loss_contrastive"])


def test_config_syntax_and_bad_terms_are_one_line_naming_them():
    cfg = load_config("moco_resnet18_eurosat", {"model.knowledge": [{"natural_images": {"dataset": "cifar10"}}]})
    assert parse_terms(cfg.model["knowledge"])[0].dataset == "cifar10"
    with pytest.raises(ConfigError, match=r"model.knowledge\[0\]: unknown knowledge term 'land_use'; known terms: "
                                          + ", ".join(sorted(TERMS))):
        load_config("cmid_resnet18_eurosat", {"model.knowledge": [{"land_use": {}}]})
    with pytest.raises(ConfigError, match=r"natural_images: unknown option 'alpha'; valid options: dataset, "
                                          r"num_classes, split, weight"):
        load_config("moco_resnet18_eurosat", {"model.knowledge": [{"natural_images": {"alpha": 1}}]})
    with pytest.raises(ConfigError, match="natural_images: weight -1.0 is negative"):
        load_config("byol_resnet18_eurosat", {"model.knowledge": [{"natural_images": {"weight": -1}}]})
    with pytest.raises(ConfigError, match="natural_images given more than once"):
        load_config("gersp_resnet18_eurosat", {"model.knowledge": ["natural_images"]})
    with pytest.raises(ConfigError, match="unknown config key 'model.knowledge' for method 'geokr'"):
        load_config("geokr_resnet18_zion", {"model.knowledge": ["natural_images"]})


def test_a_term_without_its_data_source_is_an_error_naming_it():
    from rspretrain.pretrain.run import knowledge_data

    cfg = load_config("cmid_resnet18_eurosat", {"model.knowledge": [{"natural_images": {}}]})
    with pytest.raises(ConfigError, match="knowledge term natural_images has no data source"):
        knowledge_data(cfg)
    cfg = load_config("gersp_resnet18_eurosat", {"data.natural_dataset": None})
    with pytest.raises(ConfigError, match="knowledge term natural_images has no data source"):
        knowledge_data(cfg)
    cfg = load_config("moco_resnet18_eurosat", {"model.knowledge": [{"natural_images": {"dataset": "cifar10"}}],
                                                 "data.natural_dataset": "ucmerced"})
    with pytest.raises(ConfigError, match="its dataset 'cifar10' and data.natural_dataset 'ucmerced' differ"):
        knowledge_data(cfg)
    cfg = load_config("moco_resnet18_eurosat", {"model.knowledge": [{"natural_images": {"dataset": "cifar10"}}]})
    data = knowledge_data(cfg)
    assert data["natural_dataset"] == "cifar10" and data["natural_split"] == "train"


def test_an_unlabeled_source_is_an_error_naming_the_term_and_the_source(tmp_path, data_root):
    from PIL import Image

    from rspretrain.pretrain.run import build

    folder = tmp_path / "unlabeled"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(folder / f"{i}.png")
    cfg = load_config("moco_resnet18_eurosat", {
        "data.root": str(data_root), "data.max_per_class": 4, "data.batch_size": 8,
        "model.knowledge": [{"natural_images": {"dataset": f"unlabeled:{folder}"}}],
    })
    with pytest.raises(DataError, match=f"unlabeled:{folder}: the natural image source has no labels "
                                        r"\(the natural_images knowledge term"):
        build(cfg)


def test_moco_with_natural_images_trains_checkpoints_and_exports(tmp_path, data_root):
    from rspretrain.downstream.sources import encoder_specs
    from rspretrain.pretrain.export import export_backbone
    from rspretrain.pretrain.run import load_checkpoint, load_method, pretrain

    cfg = load_config("moco_resnet18_eurosat", {
        "data.root": str(data_root), "data.max_per_class": 4, "data.batch_size": 8, "data.epoch_length": 16,
        "model.image_size": 32, "model.queue_size": 32, "trainer.max_steps": 2, "trainer.progress_bar": False,
        "trainer.out_dir": str(tmp_path / "run"),
        "model.knowledge": [{"natural_images": {"weight": 1.0, "dataset": "cifar10"}}],
    })
    final = pretrain(cfg)
    assert load_checkpoint(final)["global_step"] == 2
    method = load_method(final)
    (term,) = method.knowledge
    assert method.method_name == "moco" and term.num_classes == 10 and term.dataset == "cifar10"
    (spec,) = encoder_specs(str(export_backbone(method, tmp_path / "bb.safetensors")), with_random_init=False)
    assert spec.band_names == method.band_names
