"""End-to-end: a short real pretraining on EuroSAT lowers the loss, checkpoints, resumes and evaluates."""

import csv
import json

import pytest
import torch

from rspretrain.pretrain.config import load_config
from rspretrain.pretrain.run import load_checkpoint, load_method, pretrain


def _cfg(tmp_path, data_root, **extra):
    overrides = {
        "data.root": str(data_root),
        "data.max_per_class": 30,  # 300 real EuroSAT images
        "data.batch_size": 32,
        "model.image_size": 32,
        "model.queue_size": 256,  # 8 batches: the queue holds real keys from step 8 on
        "optim.lr": 0.03,
        "optim.warmup_steps": 0,
        "optim.schedule": "constant",  # a decaying lr over 80 steps would hide the learning signal
        "trainer.max_steps": 80,
        "trainer.ckpt_every_n_steps": 10,
        "trainer.log_every_n_steps": 1,
        "trainer.out_dir": str(tmp_path / "run"),
        "trainer.progress_bar": False,
        **extra,
    }
    return load_config("moco_resnet18_eurosat", overrides)


def _losses(run_dir):
    with open(run_dir / "logs" / "metrics.csv") as f:
        return [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    tmp = tmp_path_factory.mktemp("moco")
    cfg = _cfg(tmp, data_root)
    final = pretrain(cfg)
    return cfg, final


def test_short_pretraining_lowers_the_loss(trained, data_root):
    cfg, final = trained
    losses = _losses(final.parent.parent)
    assert len(losses) == 80
    # MoCo's loss first rises while the queue fills with real keys (random initial keys are easy
    # negatives); once it is full (step 8), training must bring it down.
    early, late = sum(losses[10:20]) / 10, sum(losses[-10:]) / 10
    assert late < early - 0.1, (early, late)
    # Independent of the queue: the in-batch contrastive loss on fixed views of fixed images
    # is lower for the trained student than for the same network at initialisation.
    import torch.nn.functional as F

    from rspretrain.data import EuroSAT

    trained_model = load_method(final)
    torch.manual_seed(0)
    init_model = type(trained_model)(**dict(trained_model.hparams)).eval()
    images = EuroSAT(data_root, split="val", max_per_class=10).__getitems__(list(range(100)))
    torch.manual_seed(1)
    v1, v2 = trained_model.make_views(images)

    def in_batch_loss(model):
        with torch.no_grad():
            q, k = F.normalize(model.embed(v1), dim=1), F.normalize(model.embed(v2), dim=1)
            return F.cross_entropy(q @ k.T / 0.2, torch.arange(len(q))).item()

    assert in_batch_loss(trained_model) < in_batch_loss(init_model) - 0.03


def test_checkpoint_is_weights_only_and_reloads(trained):
    cfg, final = trained
    ckpt = load_checkpoint(final)  # torch.load(weights_only=True) inside
    assert ckpt["global_step"] == 80
    assert ckpt["rspretrain"]["method"] == "moco"
    assert ckpt["rspretrain"]["provenance"]["seed"] == 0
    method = load_method(final)
    x = torch.randn(2, 3, 32, 32)
    state = torch.load(final, weights_only=True)["state_dict"]
    prefix = "student.backbone.model."
    ref = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    assert len(ref) == len(method.backbone.model.state_dict())
    assert all(torch.equal(method.backbone.model.state_dict()[k], v) for k, v in ref.items())
    assert method.backbone(x).shape == (2, 512)
    assert (final.parent.parent / "provenance.json").is_file()
    assert not list(final.parent.glob("*.tmp"))


def test_resume_continues_to_more_steps(trained, tmp_path, data_root):
    cfg, final = trained
    import shutil

    run = tmp_path / "run"
    shutil.copytree(final.parent.parent, run)
    cfg2 = _cfg(tmp_path, data_root, **{"trainer.max_steps": 84})
    final2 = pretrain(cfg2, resume=True)
    assert load_checkpoint(final2)["global_step"] == 84
    record = json.loads((run / "provenance.json").read_text())
    (first,) = record["earlier_segments"]  # the first segment's record is kept, the new one is on top
    assert first["config"]["trainer"]["max_steps"] == 80 and record["config"]["trainer"]["max_steps"] == 84


def test_resume_without_checkpoint_is_an_error(tmp_path, data_root):
    from rspretrain.core.errors import DataError

    with pytest.raises(DataError, match="no checkpoint to resume"):
        pretrain(_cfg(tmp_path, data_root), resume=True)


@pytest.mark.parametrize("channels_last, backend", [(True, ""), (False, "eager")])
def test_speed_options_keep_outputs_and_parameter_names(channels_last, backend):
    from rspretrain.pretrain.methods import create
    from rspretrain.training.fast_step import apply_fast_step

    torch.manual_seed(0)
    plain = create("moco", backbone="resnet18", image_size=32, queue_size=16)
    fast = create("moco", backbone="resnet18", image_size=32, queue_size=16)
    fast.load_state_dict(plain.state_dict())
    apply_fast_step(fast, channels_last=channels_last, compile_backend=backend)
    assert list(fast.state_dict()) == list(plain.state_dict())  # checkpoints and exports are unchanged
    x = torch.randn(4, 3, 32, 32)
    plain.eval(), fast.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast.backbone(x), plain.backbone(x), rtol=1e-4, atol=1e-4)
    weight = fast.backbone.model.conv1.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) == channels_last
