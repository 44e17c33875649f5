import pytest
import torch

from rspretrain.core.errors import ConfigError
from rspretrain.data import InMemoryImageDataset
from rspretrain.downstream.finetune import SceneClassificationTask, SSKDNet
from rspretrain.losses.feature_reconstruction import feature_reconstruction
from rspretrain.pretrain.export import export_scene_classifier, load_scene_classifier


def _task(**kwargs) -> SSKDNet:
    torch.manual_seed(0)
    settings = {"num_classes": 4, "image_size": 32, "fusion_channels": 32, "branch_width": 16}
    return SSKDNet(**{**settings, **kwargs})


def _batch(n=6, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, 4, (n,), generator=g)


def _leaf_parameters(tensor: torch.Tensor) -> set[int]:
    """ids of the leaf tensors (parameters) an autograd graph reaches."""
    seen, leaves, stack = set(), set(), [tensor.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if hasattr(fn, "variable"):
            leaves.add(id(fn.variable))
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return leaves


def test_restoration_target_carries_no_gradient():
    task = _task(detach_branch_input=True)
    x, _ = _batch()
    out = task.net.forward_train(x)
    branch = task.branch_forward(out)
    assert not branch["target"].requires_grad and branch["target"].grad_fn is None
    feature_reconstruction(branch["restored"], branch["target"]).backward()
    # the restoration loss trains the branch, and with a detached input nothing else: the target is no path
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in task.branch.encoder.parameters())
    assert all(p.grad is None for p in task.net.parameters())


def test_branch_input_gradient_reaches_the_early_backbone_unless_detached():
    task = _task()
    x, _ = _batch()
    branch = task.branch_forward(task.net.forward_train(x))
    feature_reconstruction(branch["restored"], branch["target"]).backward()
    # (the stem: timm zero-initialises each block's last BatchNorm, so a fresh block's convs get no gradient yet)
    assert task.net.backbone.model.conv1.weight.grad.abs().sum() > 0
    assert task.net.backbone.model.layer4[0].conv1.weight.grad is None  # deeper than the low-level map


def test_kd_moves_the_backbone_not_the_branch():
    task = _task(mask_ratio=0.0)
    x, _ = _batch()
    out = task.net.forward_train(x)
    branch = task.branch_forward(out)
    from rspretrain.losses.knowledge_distillation import kd_kl

    kd_kl(out.logits, branch["logits"], 4.0).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in task.branch.classifier.parameters())
    assert task.net.classifier.weight.grad.abs().sum() > 0


def test_loss_is_the_documented_weighted_sum_and_ablations_switch_terms():
    x, y = _batch()
    weights = {"reconstruction_weight": 0.5, "branch_ce_weight": 2.0, "kd_weight": 3.0}
    torch.manual_seed(1)
    loss, _, logs = _task(**weights).loss(x, y)
    expected = (logs["loss_ce"] + 2.0 * logs["loss_ce_branch"] + 0.5 * logs["loss_reconstruction"]
                + 3.0 * logs["loss_kd"])
    assert torch.allclose(loss.detach(), expected, atol=1e-5)
    torch.manual_seed(1)
    loss, _, logs = _task(kd_weight=0.0).loss(x, y)
    assert torch.allclose(loss.detach(), logs["loss_ce"] + logs["loss_ce_branch"] + logs["loss_reconstruction"],
                          atol=1e-5)
    no_fusion = _task(fusion=False)
    assert no_fusion.net.fusion is None and not any(k.startswith("fusion") for k in no_fusion.loss(x, y)[2])
    assert any(k.startswith("fusion_weight") for k in logs)


def test_no_shuffle_keeps_cell_order_and_masking_hides_lowest_cam_cells():
    x, _ = _batch()
    task = _task(shuffle=False, mask_ratio=0.25)
    out = task.net.forward_train(x)
    branch = task.branch_forward(out)
    assert torch.equal(branch["permutation"][0], torch.arange(16))
    assert branch["cell_mask"].sum(dim=(1, 2)).tolist() == [4] * 6
    shuffled = _task(shuffle=True).branch_forward(out)["permutation"]
    assert not all(torch.equal(p, torch.arange(16)) for p in shuffled)


def test_inference_graph_has_no_branch_parameters(tmp_path):
    task = _task()
    x, _ = _batch()
    branch_ids = {id(p) for p in task.branch.parameters()}
    net_ids = {id(p) for p in task.net.parameters()}
    assert branch_ids and not branch_ids & net_ids
    # the autograd graph of the inference logits reaches net parameters only
    reached = _leaf_parameters(task.net(x).sum())
    assert reached and reached <= net_ids and not reached & branch_ids
    # the branch is never called at inference
    calls = []
    for module in task.branch.modules():
        module.register_forward_hook(lambda *_: calls.append(1))
    dataset = InMemoryImageDataset(torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8), [0, 1, 2, 3, 0],
                                   classes=["a", "b", "c", "d"])
    logits, labels = task.predict_logits(dataset, batch_size=2)
    assert logits.shape == (5, 4) and labels.tolist() == [0, 1, 2, 3, 0] and not calls
    # the exported model holds exactly the inference network and reproduces its logits
    path = export_scene_classifier(task, tmp_path / "model.safetensors")
    model = load_scene_classifier(path, band_names=("red", "green", "blue"))
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in task.net.parameters())
    assert not any("branch" in k for k in model.state_dict())
    task.net.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), task.net(x), atol=1e-5)


def test_same_seed_gives_the_same_random_backbone_for_both_methods():
    torch.manual_seed(3)
    plain = SceneClassificationTask(num_classes=4, image_size=32)
    torch.manual_seed(3)
    sskd = SSKDNet(num_classes=4, image_size=32)
    a, b = plain.net.backbone.state_dict(), sskd.net.backbone.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_knobs_are_config_errors():
    from rspretrain.core.errors import ConfigError

    with pytest.raises(ConfigError, match="saliency"):
        _task(saliency="attention")
    with pytest.raises(ConfigError, match="low_stage"):
        _task(low_stage=9)
    with pytest.raises(ConfigError, match="reconstruction_loss"):
        _task(reconstruction_loss="ssim")


def test_resnet50_backbone_trains_a_step():
    task = _task(backbone="resnet50")
    assert task.branch.encoder[0][0].in_channels == 256  # ResNet-50's layer1 width
    x, y = _batch(n=2)
    loss, _, _ = task.loss(x, y)
    loss.backward()
    assert torch.isfinite(loss) and task.net.fusion.project[2][0].weight.grad is not None


def test_a_shuffle_grid_that_does_not_tile_the_low_level_map_fails_at_construction():
    with pytest.raises(ConfigError, match=r"shuffle_grid 4 does not divide the 18x18 low-level map of a 72 px input"):
        _task(image_size=72)
    assert _task(image_size=72, shuffle_grid=3).shuffler.grid == 3  # 18 = 6 x 3
    assert _task(image_size=72, shuffle=False).shuffler.enabled is False
