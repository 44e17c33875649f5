import pytest
import torch

from rspretrain.core.errors import DataError
from rspretrain.data import InMemoryImageDataset
from rspretrain.data.pretrain.paired import PairedDataset
from rspretrain.pretrain.methods import GeRSP


def _model(**kw):
    torch.manual_seed(0)
    args = dict(backbone="resnet18", in_chans=3, image_size=32, queue_size=64, num_classes=10, shuffle_bn_groups=1)
    args.update(kw)
    return GeRSP(**args)


def _batch(n=8):
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.randint(0, 256, (n, 3, 40, 40), dtype=torch.uint8, generator=g),
        "natural_image": torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
        "natural_label": torch.randint(0, 10, (n,), generator=g),
    }


def test_bn_running_stats_see_both_halves_of_one_forward():
    model = _model()
    seen = []
    bn = model.student["backbone"].model.bn1
    handle = bn.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[0]))
    batch = _batch(8)
    model.loss_from_views(model.make_views(batch), batch)
    handle.remove()
    assert seen == [16]  # one student forward of 8 RS query views + 8 natural views
    # the running mean moved towards the mean of the concatenated batch
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))


def test_ce_gradient_reaches_backbone_and_teacher_gets_none():
    model = _model()
    batch = _batch()
    views = model.make_views(batch)
    _, logs = model.loss_from_views(views, batch)
    # backprop only the CE term: the backbone must receive a gradient from it
    pooled = model.student["backbone"](torch.cat([views[0], views[2]]))
    ce = torch.nn.functional.cross_entropy(model.student["classifier"](pooled[8:]), batch["natural_label"])
    ce.backward()
    grads = [p.grad for p in model.student["backbone"].parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    assert all(not p.requires_grad and p.grad is None for p in model.teacher.parameters())
    assert "classifier" not in dict(model.teacher.module.named_children())


def test_alpha_zero_gives_exactly_the_contrastive_loss():
    model = _model(alpha=0.0)
    batch = _batch()
    views = model.make_views(batch)
    loss, logs = model.loss_from_views(views, batch)
    assert loss.item() == pytest.approx(logs["loss_contrastive"].item(), abs=0)
    model1 = _model(alpha=1.0)
    loss1, logs1 = model1.loss_from_views(views, batch)
    assert loss1.item() == pytest.approx(logs1["loss_contrastive"].item() + logs1["loss_ce"].item(), rel=1e-6)


def test_freeze_key_projector_keeps_projector_and_updates_backbone():
    model = _model(freeze_key_projector=True, momentum=0.0)
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(0.5)
    proj_before = model.teacher.module["projector"][0].weight.clone()
    batch = _batch()
    model.loss_from_views(model.make_views(batch), batch)
    assert torch.equal(model.teacher.module["projector"][0].weight, proj_before)
    assert torch.allclose(model.teacher.module["backbone"].model.conv1.weight,
                          model.student["backbone"].model.conv1.weight)


def _ds(n, labels=True, bands=3):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, bands, 4, 4).contiguous()
    return InMemoryImageDataset(images, labels=torch.arange(n) % 3 if labels else None,
                                classes=["a", "b", "c"] if labels else None)


def test_paired_dataset_cycles_the_shorter_source():
    paired = PairedDataset(_ds(5, labels=False), _ds(12))
    assert len(paired) == 12
    batch = paired.__getitems__(list(range(12)))
    assert batch["image"][:, 0, 0, 0].tolist() == [i % 5 for i in range(12)]
    assert batch["natural_image"][:, 0, 0, 0].tolist() == list(range(12))
    assert batch["natural_label"].tolist() == [i % 3 for i in range(12)]
    assert len(PairedDataset(_ds(5, labels=False), _ds(12), length=30)) == 30
    assert paired.num_classes == 3


def test_paired_dataset_puts_natural_images_on_the_rs_value_scale():
    rs = _ds(4, labels=False)
    rs.value_scale = 10000.0
    paired = PairedDataset(rs, _ds(4))
    batch = paired.__getitems__([3])
    assert batch["natural_image"].dtype == torch.float32
    assert batch["natural_image"][0, 0, 0, 0].item() == pytest.approx(3 * 10000 / 255)


def test_paired_dataset_bad_input():
    with pytest.raises(DataError, match="no labels"):
        PairedDataset(_ds(5, labels=False), _ds(5, labels=False), natural_name="nat")
    with pytest.raises(DataError, match="empty"):
        PairedDataset(_ds(0, labels=False), _ds(5))
    with pytest.raises(DataError, match="4 bands"):
        PairedDataset(_ds(5, labels=False), _ds(5, bands=4))


def test_labels_outside_the_classifier_are_an_error():
    model = _model(num_classes=3)
    batch = _batch()
    with pytest.raises(DataError, match=r"natural_images: natural label \d+ out of range for 3 classes"):
        model.loss_from_views(model.make_views(batch), batch)


def test_shipped_config_trains_on_eurosat_with_cifar_and_exports_student(tmp_path, data_root):
    from rspretrain.pretrain.config import load_config
    from rspretrain.pretrain.export import export_backbone, read_metadata
    from rspretrain.pretrain.run import load_method, pretrain

    cfg = load_config("gersp_resnet18_eurosat", {
        "data.root": str(data_root), "data.max_per_class": 4, "data.batch_size": 8, "data.epoch_length": 64,
        "model.image_size": 32, "model.queue_size": 32, "trainer.max_steps": 3, "trainer.progress_bar": False,
        "trainer.out_dir": str(tmp_path / "run"),
    })
    final = pretrain(cfg)
    method = load_method(final)
    assert method.method_name == "gersp" and method.num_classes == 10  # CIFAR-10 classes from the data
    path = export_backbone(method, tmp_path / "bb.safetensors")
    assert read_metadata(path)["exported_from"] == "student"


def test_natural_source_for_a_method_without_classifier_is_an_error(tmp_path, data_root):
    from rspretrain.core.errors import ConfigError
    from rspretrain.pretrain.config import load_config
    from rspretrain.pretrain.run import pretrain

    cfg = load_config("moco_resnet18_eurosat", {
        "data.root": str(data_root), "data.max_per_class": 4, "data.batch_size": 8,
        "data.natural_dataset": "cifar10", "trainer.out_dir": str(tmp_path / "run"),
    })
    with pytest.raises(ConfigError, match="natural_dataset"):
        pretrain(cfg)


def test_natural_source_without_labels_is_an_error(tmp_path, data_root):
    from rspretrain.pretrain.config import load_config
    from rspretrain.pretrain.run import pretrain

    folder = tmp_path / "unlabeled"
    folder.mkdir()
    from PIL import Image

    for i in range(4):
        Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(folder / f"{i}.png")
    cfg = load_config("gersp_resnet18_eurosat", {
        "data.root": str(data_root), "data.max_per_class": 4, "data.batch_size": 8,
        "data.natural_dataset": f"unlabeled:{folder}", "trainer.out_dir": str(tmp_path / "run"),
    })
    with pytest.raises(DataError, match="no labels"):
        pretrain(cfg)


def test_resume_continues_the_cosine_restart_schedule(tmp_path, data_root):
    from rspretrain.core.optim import lr_multiplier
    from rspretrain.pretrain.config import load_config
    from rspretrain.pretrain.run import load_checkpoint, pretrain

    def cfg(steps):
        return load_config("gersp_resnet18_eurosat", {
            "data.root": str(data_root), "data.max_per_class": 4, "data.batch_size": 8, "data.epoch_length": 80,
            "model.image_size": 32, "model.queue_size": 32, "trainer.max_steps": steps, "trainer.progress_bar": False,
            "trainer.ckpt_every_n_steps": 3, "trainer.out_dir": str(tmp_path / "run"),
        })

    pretrain(cfg(10), resume=None)
    first = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    resumed = load_checkpoint(pretrain(cfg(15), resume=True))
    assert first["global_step"] == 10 and resumed["global_step"] == 15
    sched = resumed["lr_schedulers"][0]
    assert sched["last_epoch"] == 15  # the schedule kept counting from 10, not from 0
    c = cfg(15).optim
    expected = c.lr * lr_multiplier(c, 15, 15)
    assert sched["_last_lr"][0] == pytest.approx(expected, rel=1e-6)
    # and the queue and teacher came back from the checkpoint, not re-initialised
    assert torch.equal(first["state_dict"]["queue.pointer"], torch.tensor((10 * 8) % 32))
