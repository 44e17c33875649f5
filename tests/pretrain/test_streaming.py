"""Pretraining on prepared shards (data.dataset shards:DIR): every view recipe on streamed, decode-time-cropped
images; a SIGKILLed run resumes inside an epoch with the same losses; what does not fit is a clear error."""

import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict

import pytest
import torch

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.pretrain.config import load_config
from rspretrain.pretrain.datamodule import PretrainDataModule, main_is_import_safe
from rspretrain.pretrain.methods import get_method
from rspretrain.pretrain.run import build, load_checkpoint, pretrain
from tests.pretrain.test_resume import KILLED_RUN, LossRecorder

# 36 images / batch 8 = 4 batches an epoch (drop_last): the kill (step 7) and the resume (from the step-4 checkpoint)
# sit at and inside epoch boundaries, and the continued run crosses two more.
STEPS, CKPT_EVERY, KILL_AT = 10, 4, 7


def _overrides(config, shards, out, **more):
    smoke = {k: v for k, v in get_method(load_config(config).method).smoke_overrides.items()
             if k != "data.max_per_class"}  # applies when preparing, not to shards
    return {
        "data.dataset": f"shards:{shards}", "data.num_workers": 2, "data.batch_size": 8, "model.image_size": 32,
        "trainer.max_steps": STEPS, "trainer.ckpt_every_n_steps": CKPT_EVERY, "trainer.progress_bar": False,
        "trainer.out_dir": str(out), "trainer.log_every_n_steps": 1, "optim.warmup_steps": 2, **smoke, **more,
    }


@pytest.mark.slow  # the default suite runs the same kill and resume on two ranks (tests/pretrain/test_distributed.py)
def test_a_sigkilled_streamed_run_resumes_inside_the_epoch_with_the_same_losses(prepared, tmp_path):
    config = "moco_resnet18_eurosat"
    recorder = LossRecorder()
    pretrain(load_config(config, _overrides(config, prepared, tmp_path / "straight")), callbacks=[recorder])
    straight = recorder.losses
    assert sorted(straight) == list(range(1, STEPS + 1))

    killed = _overrides(config, prepared, tmp_path / "killed")
    script = KILLED_RUN.format(threads=torch.get_num_threads(), kill_at=KILL_AT, config=config)
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(killed)], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ckpt = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == CKPT_EVERY
    (loader,) = ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"]  # the streamed loader's position
    assert loader["dataset"]["num_samples_yielded"] == CKPT_EVERY * 8

    recorder = LossRecorder()
    pretrain(load_config(config, killed), resume=True, callbacks=[recorder])
    assert sorted(recorder.losses) == list(range(CKPT_EVERY + 1, STEPS + 1))
    for step, loss in recorder.losses.items():
        assert loss == straight[step], f"step {step}"  # bit for bit


@pytest.mark.parametrize("config, views", [
    ("byol_resnet18_eurosat", {}),  # decode-time crops (B, 2, C, S, S)
    ("cmid_resnet18_eurosat", {"views.resize_before_crop": False}),  # crops with boxes for position matching
    ("cmid_resnet18_eurosat", {}),  # CMID's released recipe: resize first, crop on the device
    ("supervised_resnet18_cifar10", {}),  # one crop per image, the shards' labels
])
def test_every_recipe_trains_on_streamed_images(config, views, prepared, tmp_path):
    cfg = load_config(config, _overrides(config, prepared, tmp_path / "run", **views, **{"trainer.max_steps": 2}))
    model, dm, _ = build(cfg)
    batch = next(iter(dm.train_dataloader()))
    crops = model.decode_crop_scales()[0]
    assert batch["image"].shape == ((8, len(crops), 3, 32, 32) if crops else (8, 3, 32, 32))
    assert bool(crops) == (views.get("views.resize_before_crop", True) is False or not config.startswith("cmid"))
    loss, _ = model.step_loss(batch)
    assert torch.isfinite(loss)
    if config.startswith("supervised"):  # the whole Lightning loop once (the others' loops are the same code)
        assert load_checkpoint(pretrain(cfg))["global_step"] == 2


def test_gersp_pairs_streamed_rs_and_natural_shards(prepared, tmp_path):
    config = "gersp_resnet18_eurosat"
    cfg = load_config(config, _overrides(config, prepared, tmp_path / "run", **{
        "data.natural_dataset": f"shards:{prepared}", "trainer.max_steps": 2}))
    model, dm, _ = build(cfg)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (8, 2, 3, 32, 32) and batch["natural_image"].shape == (8, 1, 3, 32, 32)
    assert model.num_classes == 3 and batch["natural_label"].max() < 3
    assert load_checkpoint(pretrain(cfg))["global_step"] == 2


def test_the_manifest_gives_bands_statistics_and_classes_without_a_pass(prepared):
    dm = PretrainDataModule(f"shards:{prepared}", batch_size=8)
    dm.setup()
    kwargs = dm.model_kwargs()
    manifest = json.loads((prepared / "rspretrain.json").read_text())
    assert kwargs["in_chans"] == 3 and kwargs["mean"] == manifest["mean"] and kwargs["std"] == manifest["std"]
    assert dm.classes == ["farm", "forest", "town"]


def test_settings_that_do_not_apply_to_shards_are_errors(prepared):
    with pytest.raises(ConfigError, match=r"data.max_per_class apply when preparing.*--max-per-class"):
        PretrainDataModule(f"shards:{prepared}", max_per_class=3).setup()
    with pytest.raises(ConfigError, match=r"data.dataset_options.tile apply .*data.dataset_options \{\}"):
        PretrainDataModule(f"shards:{prepared}", dataset_options={"tile": 64}).setup()
    with pytest.raises(ConfigError, match="both or neither must be prepared shards"):
        PretrainDataModule(f"shards:{prepared}", natural_dataset="cifar10")
    with pytest.raises(ConfigError, match="data.split must be 'train' or 'all'"):
        PretrainDataModule(f"shards:{prepared}", split="test").setup()
    with pytest.raises(DataError, match="36 images, fewer than one batch of 64"):
        PretrainDataModule(f"shards:{prepared}", batch_size=64).setup()


def test_an_in_memory_natural_folder_of_mixed_sizes_needs_and_takes_a_decode_size(jpeg_folder, data_root):
    dm = PretrainDataModule("eurosat", root=str(data_root), max_per_class=2, batch_size=8,
                            natural_dataset=f"folder:{jpeg_folder}", natural_split="all")
    with pytest.raises(DataError, match="set data.natural_image_size"):
        dm.setup()
    dm = PretrainDataModule("eurosat", root=str(data_root), max_per_class=2, batch_size=8,
                            natural_dataset=f"folder:{jpeg_folder}", natural_split="all", natural_image_size=48)
    dm.setup()
    batch = dm.dataset.__getitems__(list(range(8)))
    assert batch["natural_image"].shape == (8, 3, 48, 48) and dm.model_kwargs()["num_classes"] == 3


def test_image_file_sources_stream_when_asked_or_too_large_for_memory(data_root, tmp_path):
    from rspretrain.data.shards.shard_images import ShardImages

    small = PretrainDataModule("eurosat", root=str(data_root), max_per_class=2, batch_size=8)
    small.setup()
    assert not small.streamed and len(small.dataset) == 20  # 20 x 3 x 64 x 64 bytes: the in-memory fast path
    for options in ({"loading": "stream"}, {"memory_limit_gb": 20 * 3 * 64 * 64 / 1e9 / 2}):
        dm = PretrainDataModule("eurosat", root=str(data_root), max_per_class=2, batch_size=8, **options)
        dm.setup()
        assert dm.streamed and isinstance(dm.dataset, ShardImages) and len(dm.dataset) == 20
        assert dm.spec.startswith("shards:") and len(dm.classes) == 10
        assert dm.mean == pytest.approx(small.mean, abs=0.02)  # the manifest's sample vs the in-memory pass
    with pytest.raises(ConfigError, match="data.loading must be auto, memory or stream"):
        PretrainDataModule("eurosat", loading="disk")


def test_geokr_streams_land_cover_tiles_prepared_once_into_the_cache(data_root, tmp_path):
    # data.loading stream: the Zion scene is tiled once (rspretrain prepare into $RSPRETRAIN_CACHE/shards) and the
    # tiles, with their NLCD proportions, stream; the model learns the scheme's 8 classes from the set's manifest.
    config = "geokr_resnet18_zion"
    smoke = get_method("geokr").smoke_overrides
    overrides = {**smoke, "data.loading": "stream", "data.num_workers": 1, "data.batch_size": 8,
                 "model.image_size": 32, "trainer.max_steps": 2, "trainer.progress_bar": False,
                 "trainer.out_dir": str(tmp_path / "run")}
    cfg = load_config(config, overrides)
    model, dm, _ = build(cfg)
    assert dm.streamed and dm.spec.startswith("shards:") and "rspretrain-cache" in dm.spec
    assert model.num_classes == 8 and len(dm.dataset) == 16  # the smoke region's 16 tiles
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (8, 4, 32, 32) and batch["label"].shape == (8, 8)
    assert torch.allclose(batch["label"].sum(dim=1), torch.ones(8))
    loss, _ = model.step_loss(batch)
    assert torch.isfinite(loss)
    assert load_checkpoint(pretrain(cfg))["global_step"] == 2
    again = PretrainDataModule(**asdict(cfg.data), seed=cfg.seed)
    again.setup()
    assert again.spec == dm.spec  # a second run streams the same prepared tiles


def test_geokr_on_tiles_without_land_cover_is_refused_before_training(data_root, tmp_path):
    from rspretrain.data.shards.prepare import prepare

    raster = data_root / "geotiff_samples" / "rasterio_RGB.byte.tif"
    prepare(f"geotiff:{raster}", tmp_path / "tiles", workers=1, progress=False, tile=64)
    cfg = load_config("geokr_resnet18_zion", {"data.dataset": f"shards:{tmp_path / 'tiles'}",
                                              "data.dataset_options": {}, "data.batch_size": 8})
    with pytest.raises(DataError, match="has no land-cover proportions; method 'geokr' learns from them"):
        build(cfg)


def test_workers_start_from_a_clean_process_on_several_ranks_and_read_the_same_batches(prepared):
    dm = PretrainDataModule(f"shards:{prepared}", batch_size=8, num_workers=1)
    assert dm.worker_context() is None  # one rank: torch's default (fork on Linux)

    class TwoRanks:
        world_size = 2

    dm.trainer = TwoRanks()
    # pytest's main module is a script: spawning would import it again, so auto keeps fork there and says so
    assert not main_is_import_safe() and dm.worker_context() is None
    import rspretrain.pretrain.datamodule as datamodule

    datamodule.main_is_import_safe = lambda: True  # as under the rspretrain command
    try:
        assert dm.worker_context() == "spawn"  # a DDP rank has other threads: forking it once deadlocked
    finally:
        datamodule.main_is_import_safe = main_is_import_safe
    assert PretrainDataModule(f"shards:{prepared}", num_workers=0, worker_start="spawn").worker_context() is None
    with pytest.raises(ConfigError, match="data.worker_start must be one of auto, fork, forkserver, spawn, got 'x'"):
        PretrainDataModule(f"shards:{prepared}", worker_start="x")

    def first_batches(start):
        dm = PretrainDataModule(f"shards:{prepared}", batch_size=8, num_workers=1, worker_start=start)
        dm.setup("fit")
        dm.set_decode_crops(32, ((0.2, 1.0), (0.2, 1.0)))
        loader = iter(dm.train_dataloader())
        return [next(loader)["image"] for _ in range(2)]

    for forked, spawned in zip(first_batches("fork"), first_batches("spawn")):
        torch.testing.assert_close(forked, spawned, rtol=0, atol=0)  # the start method never changes the data
