"""A base and the same base plus a knowledge term, at one seed, differ only in the term (the knowledge study's
pairing, benchmarks/knowledge_study.py): same initial weights of every shared module, same RS batches, same RS views;
for natural_images on MoCo and CMID (EuroSAT) and for land_cover on MoCo (the study's Zion group).
And the combination no paper has, CMID + natural images, trains end to end."""

from __future__ import annotations

import pytest
import torch

from rspretrain.core.rng_state import seed_step
from rspretrain.pretrain.config import load_config
from rspretrain.pretrain.methods import get_method
from rspretrain.pretrain.run import build
from tests.conftest import zion_tiles

CONFIGS = {"moco": "moco_resnet18_eurosat", "cmid": "cmid_resnet18_eurosat"}
TERM = {"model.knowledge": [{"natural_images": {"weight": 1.0, "dataset": "cifar10"}}]}
LAND_COVER = {"model.knowledge": [{"land_cover": {"weight": 1.0, "teacher": "sparse"}}]}


def _config(base: str, data_root, term: bool, **more):
    overrides = {**get_method(base).smoke_overrides, "data.root": str(data_root), "data.batch_size": 8,
                 "model.image_size": 32, "trainer.progress_bar": False, "seed": 3, **more}
    return load_config(CONFIGS[base], {**overrides, **(TERM if term else {})})


def _zion_config(data_root, term: bool):
    """The study's zion group: MoCo on 16 real RGB Zion tiles of 32 px (land-cover proportions in every batch)."""
    overrides = {**zion_tiles(data_root), "data.batch_size": 8, "model.image_size": 32, "model.queue_size": 16,
                 "trainer.progress_bar": False, "seed": 3}
    return load_config("moco_resnet18_eurosat", {**overrides, **(LAND_COVER if term else {})})


@pytest.mark.parametrize("base,term_name", [("moco", "natural_images"), ("cmid", "natural_images"),
                                            ("moco", "land_cover")])
def test_a_term_changes_nothing_the_base_shares(base, term_name, data_root):
    built = {}
    for term in (False, True):
        if term_name == "land_cover":
            cfg = _zion_config(data_root, term)
        else:
            # The pairing's epoch is the larger source (GeRSP's rule); in the study EuroSAT train (16,200) is larger
            # than the CIFAR-10 subset (10,000), so the RS source sets it. Here 40 RS images stand for that case.
            more = {"data.epoch_length": len(built[False][1].dataset)} if term else {}
            cfg = _config(base, data_root, term, **more)
        torch.manual_seed(cfg.seed)  # as pretrain() seeds before building
        model, dm, _ = build(cfg)
        built[term] = (model, dm)
    (plain, plain_dm), (with_term, term_dm) = built[False], built[True]
    shared = plain.state_dict()
    extended = with_term.state_dict()
    head = with_term.knowledge[0].head
    added = set(extended) - set(shared)
    assert added and all(k.startswith((f"student.{head}.", "knowledge_modules.")) or f".{head}." in k for k in added)
    assert all(torch.equal(shared[k], extended[k]) for k in shared)  # bit-equal initial weights
    batch_plain = next(iter(plain_dm.train_dataloader()))
    batch_term = next(iter(term_dm.train_dataloader()))
    assert torch.equal(batch_plain["image"], batch_term["image"])  # the RS order is the base's
    if term_name == "natural_images":
        assert "natural_image" in batch_term and "natural_image" not in batch_plain
    else:  # both see the proportions; only the term learns from them
        assert torch.equal(batch_plain["label"], batch_term["label"]) and batch_term["label"].shape[1] == 8
    views = {}
    for term, model, batch in ((False, plain, batch_plain), (True, with_term, batch_term)):
        seed_step(3, 0, 5)  # the draws of step 5 on rank 0
        made = model.make_views(batch)
        views[term] = list(made)
    rs_plain = [v for v in views[False] if torch.is_tensor(v)]
    rs_term = [v for v in views[True] if torch.is_tensor(v)]
    assert len(rs_term) >= len(rs_plain) > 0
    assert all(torch.equal(a, b) for a, b in zip(rs_plain, rs_term))  # the base's views are drawn first, alike


def test_cmid_with_natural_images_trains_and_checkpoints(tmp_path, data_root):
    from rspretrain.pretrain.run import load_checkpoint, load_method, pretrain

    cfg = _config("cmid", data_root, True, **{"trainer.max_steps": 2, "trainer.out_dir": str(tmp_path / "run")})
    final = pretrain(cfg)
    method = load_method(final)
    (term,) = method.knowledge
    assert method.method_name == "cmid" and term.name == "natural_images" and term.num_classes == 10
    assert load_checkpoint(final)["global_step"] == 2
    assert "classifier" in method.student and not any("classifier" in k for k in method.teacher.state_dict())
