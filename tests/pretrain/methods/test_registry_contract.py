"""The contract every registered pretraining method keeps (as timm's tests iterate over ``list_models()``).

Parametrised over the registry, so a new method file is covered with no change here: it builds for 3 and 13 bands
and trains two steps on a batch of its own kind; through the real run on its shipped config (with its
``smoke_overrides``) it writes a checkpoint, resumes from it, exports its backbone, and the export loads through
the evaluation's loader (band check included) and scores a kNN on the run's own images.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rspretrain.downstream.frozen.features import extract_features
from rspretrain.downstream.frozen.knn import knn_predict
from rspretrain.downstream.sources import encoder_specs
from rspretrain.pretrain import methods
from rspretrain.pretrain.config import load_config
from rspretrain.pretrain.export import export_backbone
from rspretrain.pretrain.run import build, load_checkpoint, load_method, pretrain

NAMES = sorted(methods.METHODS)


def _model_overrides(cls) -> dict:
    return {k.split(".", 1)[1]: v for k, v in cls.smoke_overrides.items() if k.startswith("model.")}


def test_every_method_has_a_shipped_config_that_names_it():
    for name, cls in methods.METHODS.items():
        assert cls.method_name == name
        assert cls.default_config is not None, f"{name} has no default_config"
        assert load_config(cls.default_config).method == name


@pytest.mark.parametrize("in_chans", [3, 13])
@pytest.mark.parametrize("name", NAMES)
def test_builds_and_trains_two_steps(name, in_chans):
    torch.manual_seed(0)
    cls = methods.get_method(name)
    kwargs = {"backbone": "resnet18", "image_size": 32, **_model_overrides(cls)}
    model = methods.create(name, in_chans=in_chans, **kwargs)
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    stem = next(model.backbone.parameters())  # the first convolution: it sees the in_chans bands
    first = stem.detach().clone()
    generator = torch.Generator().manual_seed(1)
    for _ in range(2):
        batch = model.example_batch(4, 40, generator)
        loss, logs = model.loss_from_views(model.make_views(batch), batch)
        assert loss.ndim == 0 and torch.isfinite(loss), (name, float(loss))
        assert all(torch.isfinite(torch.as_tensor(v)).all() for v in logs.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    grads = [p.grad for p in model.backbone.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads), f"{name}: no gradient reached the backbone"
    assert stem.shape[1] == in_chans and not torch.equal(first, stem), f"{name}: the backbone's stem did not change"
    meta = model.export_metadata()
    assert meta["in_chans"] == in_chans and meta["method"] == name


@pytest.mark.parametrize("name", NAMES)
def test_runs_checkpoints_resumes_exports_and_evaluates(name, tmp_path, data_root):
    cls = methods.get_method(name)
    out = tmp_path / "run"
    overrides = {
        "data.root": str(data_root), "data.batch_size": 8, "model.image_size": 32, "trainer.max_steps": 2,
        "trainer.ckpt_every_n_steps": 1, "trainer.progress_bar": False, "trainer.out_dir": str(out),
        "trainer.log_every_n_steps": 1, "optim.warmup_steps": 1, **cls.smoke_overrides,
    }
    final = pretrain(load_config(cls.default_config, overrides))
    assert load_checkpoint(final)["global_step"] == 2
    resumed = pretrain(load_config(cls.default_config, {**overrides, "trainer.max_steps": 3}), resume=True)
    ckpt = load_checkpoint(resumed)
    assert ckpt["global_step"] == 3 and ckpt["rspretrain"]["method"] == name

    method = load_method(resumed)
    export = export_backbone(method, tmp_path / "backbone.safetensors", source=str(resumed))
    (spec,) = encoder_specs(str(export), with_random_init=False)
    assert spec.band_names == method.band_names

    _, dm, _ = build(load_config(cls.default_config, overrides))
    dataset = dm.dataset
    n = min(len(dataset), 24)
    subset = _Head(dataset, n)
    features, labels = extract_features(spec, subset, batch_size=8, progress=False)
    assert features.ndim == 2 and features.shape[0] == n and np.isfinite(features).all()
    labels = subset.labels
    predicted = knn_predict(features[: n // 2], labels[: n // 2], features[n // 2 :], int(labels.max()) + 1, k=3)
    assert predicted.shape == (n - n // 2,) and 0 <= float((predicted == labels[n // 2 :]).mean()) <= 1


class _Head:
    """The first ``n`` samples of a pretraining dataset, as a labelled scene dataset: its own labels, the dominant
    class of land-cover proportions, or (unlabelled images) alternating labels."""

    def __init__(self, dataset, n: int) -> None:
        self.dataset, self.n = dataset, n
        self.value_scale = dataset.value_scale
        self.band_names = getattr(dataset, "band_names", None)
        label = dataset.__getitems__(list(range(n))).get("label")
        if label is None:
            self.labels = np.arange(n) % 2
        else:
            label = torch.as_tensor(label)
            self.labels = (label.argmax(dim=1) if label.ndim == 2 else label).numpy()

    def __len__(self) -> int:
        return self.n

    def __getitems__(self, indices):
        batch = self.dataset.__getitems__(list(indices))
        return {"image": batch["image"], "label": torch.as_tensor(self.labels[list(indices)])}


@pytest.mark.parametrize("name", NAMES)
def test_a_bf16_mixed_step_runs_with_fp32_views(name):
    """Under CPU bf16 autocast (``trainer.precision bf16-mixed``) a training step's forward is finite and its
    gradients reach the backbone; the views are made in fp32."""
    torch.manual_seed(0)
    cls = methods.get_method(name)
    kwargs = {"backbone": "resnet18", "image_size": 32, **_model_overrides(cls)}
    model = methods.create(name, in_chans=3, **kwargs).train()
    batch = model.example_batch(4, 40, torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = model.step_loss(batch)
    assert torch.isfinite(loss), (name, float(loss))
    assert loss.dtype == torch.float32, f"{name}: the loss is reduced in {loss.dtype}"
    loss.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.backbone.parameters())
    # The state that outlives the step (weights, EMA teachers, queues, DINO centres, BatchNorm statistics) stays
    # fp32: a queue or centre written in bf16 would keep its rounding for every later step.
    half = [k for k, t in [*model.named_parameters(), *model.named_buffers()] if t.is_floating_point()
            and t.dtype != torch.float32]
    assert not half, f"{name}: state in half precision after a bf16 step: {half[:5]}"
