"""GeRSP and CMID as presets (base + knowledge terms) give exactly the loss the methods gave before knowledge terms
existed, on a fixed batch and seed.

The reference numbers were recorded with main's code before the refactor (commit c28814a, the last before knowledge
terms; ``methods/gersp.py`` was then its own MoCo subclass with its classifier and loss written out), by :func:`_losses`
below with ``torch.set_num_threads(2)`` (as ``tests/conftest.py``): the model built under ``torch.manual_seed(0)``
with the method's smoke overrides (ResNet-18, 3 bands, 32 px views), two training steps (``step_loss`` on
``example_batch(4, 40, Generator().manual_seed(1))``, then SGD lr 0.05), the two losses as Python floats.
"""

from __future__ import annotations

import pytest
import torch

from rspretrain.pretrain import methods

#: (method, model arguments) -> the two step losses main's code gave (see the module docstring).
REFERENCE = {
    ("gersp", ()): (7.059854030609131, 8.799808502197266),
    ("gersp", (("alpha", 0.5), ("freeze_key_projector", True))): (3.535731792449951, 5.293963432312012),
    ("cmid", ()): (7.165538787841797, 8.358046531677246),
    ("cmid", (("mim_weight", 0.0),)): (7.039669036865234, 8.37950325012207),
    ("moco", ()): (0.916812539100647, 1.744500994682312),
    ("byol", ()): (3.8654818534851074, 3.587644100189209),
}


def _losses(name: str, **kwargs) -> list[float]:
    torch.manual_seed(0)
    cls = methods.get_method(name)
    smoke = {k.split(".", 1)[1]: v for k, v in cls.smoke_overrides.items() if k.startswith("model.")}
    model = methods.create(name, backbone="resnet18", in_chans=3, image_size=32, **{**smoke, **kwargs}).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    generator = torch.Generator().manual_seed(1)
    out = []
    for _ in range(2):
        batch = model.example_batch(4, 40, generator)
        loss, _ = model.step_loss(batch)
        out.append(float(loss.detach()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return out


@pytest.mark.parametrize(("name", "kwargs"), list(REFERENCE), ids=lambda v: str(v))
def test_a_preset_gives_the_loss_of_the_method_before_knowledge_terms(name, kwargs):
    assert _losses(name, **dict(kwargs)) == pytest.approx(REFERENCE[name, kwargs], abs=1e-6)


def test_gersp_is_moco_with_the_natural_images_term():
    """The preset spelled out as base + term (GeRSP's tau, momentum, alpha as the weight, its 1000 classes) gives
    GeRSP's reference loss."""
    knowledge = [{"natural_images": {"weight": 1.0, "num_classes": 1000}}]
    losses = _losses("moco", temperature=0.07, momentum=0.999, knowledge=knowledge)
    assert losses == pytest.approx(REFERENCE["gersp", ()], abs=1e-6)


def test_gersp_keeps_its_checkpoint_layout():
    model = methods.create("gersp", backbone="resnet18", image_size=32, queue_size=32, num_classes=10)
    assert [t.spec() for t in model.knowledge] == [
        {"natural_images": {"weight": 1.0, "dataset": None, "split": "train", "num_classes": 10}}]
    assert "student.classifier.weight" in model.state_dict()
    assert not any("classifier" in key for key in model.teacher.state_dict())
    assert "knowledge" in model.hparams and model.hparams["alpha"] == 1.0
