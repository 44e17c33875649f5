import subprocess
import sys

import pytest

from rspretrain.apps.cli import main, split_pretrain_args


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rspretrain.apps.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_unknown_config_key_is_one_line_error_naming_it():
    res = _run("pretrain", "--config", "moco_resnet18_eurosat", "--optim.lrr", "0.1")
    assert res.returncode == 2
    assert "optim.lrr" in res.stderr
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_wrong_type_names_the_key():
    res = _run("pretrain", "moco", "--config", "moco_resnet18_eurosat", "--data.batch_size", "many")
    assert res.returncode == 2 and "data.batch_size" in res.stderr


def test_missing_data_path_names_it(tmp_path):
    missing = tmp_path / "nowhere"
    res = _run("pretrain", "--config", "moco_resnet18_eurosat", "--data.dataset", f"folder:{missing}",
               "--trainer.out_dir", str(tmp_path / "run"))  # not the checkout's runs/moco, which may hold a run
    assert res.returncode == 2
    assert str(missing) in res.stderr and "Traceback" not in res.stderr


def test_missing_checkpoint_for_evaluate_and_debug_shows_traceback(tmp_path, capsys):
    # In this process (the one-line error of a real process is tested above): without --debug one line, exit 2;
    # with it, the exception itself propagates (a traceback).
    assert main(["evaluate", str(tmp_path / "none.ckpt")]) == 2
    err = capsys.readouterr().err
    assert "none.ckpt" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(Exception, match="none.ckpt"):
        main(["--debug", "evaluate", str(tmp_path / "none.ckpt")])


def test_split_pretrain_args():
    method, configs, resume, overrides = split_pretrain_args(
        ["moco", "--config", "c.yaml", "--optim.lr", "0.1", "-c=d.yaml", "--resume"])
    assert (method, configs, resume, overrides) == ("moco", ["c.yaml", "d.yaml"], True, ["--optim.lr", "0.1"])
    assert split_pretrain_args(["--resume", "x.ckpt", "--a=1"])[2:] == ("x.ckpt", ["--a=1"])


def test_export_and_info_on_a_trained_checkpoint(tmp_path, data_root, capsys):
    code = main(["pretrain", "moco", "--config", "moco_resnet18_eurosat", "--data.root", str(data_root),
                 "--data.max_per_class", "4", "--data.batch_size", "8", "--model.image_size", "32",
                 "--model.queue_size", "16", "--trainer.max_steps", "2", "--trainer.progress_bar", "false",
                 "--trainer.out_dir", str(tmp_path / "run")])
    assert code == 0
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert main(["export", str(ckpt), "--to", str(tmp_path / "bb.safetensors")]) == 0
    assert main(["info", str(tmp_path / "bb.safetensors")]) == 0
    assert main(["info", str(ckpt)]) == 0
    assert main(["info", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert '"arch": "resnet18"' in out and '"global_step": 2' in out and '"git_commit"' in out
    # timm's folder layout from the command line; timm builds it from the folder alone
    import timm

    assert main(["export", str(ckpt), "--to", str(tmp_path / "bb_timm"), "--format", "timm"]) == 0
    assert "local-dir:" in capsys.readouterr().out
    assert timm.create_model(f"local-dir:{tmp_path / 'bb_timm'}", pretrained=True, num_classes=0).num_features == 512


def _folder_with_one_truncated_jpeg(root):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("forest", "water"):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / cls / f"{i}.jpg")
    good = (root / "water" / "0.jpg").read_bytes()
    (root / "water" / "broken.jpg").write_bytes(good[: len(good) // 2])
    return root / "water" / "broken.jpg"


def test_corrupt_image_names_the_file_and_skip_corrupt_counts_it(tmp_path, capsys):
    broken = _folder_with_one_truncated_jpeg(tmp_path / "scenes")
    args = ["pretrain", "moco", "--config", "moco_resnet18_eurosat", "--data.dataset", f"folder:{tmp_path / 'scenes'}",
            "--data.split", "all", "--data.batch_size", "4", "--model.image_size", "16", "--model.queue_size", "8",
            "--trainer.max_steps", "1", "--trainer.progress_bar", "false", "--trainer.out_dir", str(tmp_path / "run")]
    assert main(args) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # progress lines may come first; the error is one line, last
    assert last.startswith("rspretrain: error:") and broken.name in last and "Traceback" not in err
    assert main(args + ["--skip-corrupt"]) == 0
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert "skipped 1 of 13 images that could not be decoded (first:" in capsys.readouterr().err


def test_land_cover_not_overlapping_the_imagery_is_one_line_naming_both_files(tmp_path, data_root, capsys):
    import numpy as np
    import rasterio
    from rasterio.transform import Affine

    away = tmp_path / "away.tif"  # a real-sized Landsat-like tile placed 500 km east of the Zion NLCD
    profile = {"driver": "GTiff", "width": 64, "height": 64, "count": 1, "dtype": "uint16", "crs": "EPSG:32612",
               "transform": Affine(30.0, 0, 801905.0, 0, -30.0, 4154085.0)}
    with rasterio.open(away, "w", **profile) as dst:
        dst.write(np.ones((1, 64, 64), np.uint16))
    nlcd = data_root / "zion_landsat8_nlcd2011" / "nlcd2011.tif"
    code = main(["landcover-labels", "--images", str(away), "--landcover", str(nlcd), "--scheme", "nlcd8",
                 "--out", str(tmp_path / "labels.parquet")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("rspretrain: error:") and "nlcd2011.tif" in err[0] and "away.tif" in err[0]
    assert not (tmp_path / "labels.parquet").exists()


def _scene_folder(root, broken_name=None, broken_bytes=b"", empty_class=False):
    """A class-per-folder set of small real JPEGs; optionally one broken file or an empty class folder."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)
    for cls in ("forest", "water"):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / cls / f"{i}.jpg")
    if broken_name:
        (root / "water" / broken_name).write_bytes(broken_bytes)
    if empty_class:
        (root / "sand").mkdir()
    return root


def _plain_geotiff(path):
    """A GeoTIFF with pixels but no CRS or geotransform."""
    import numpy as np
    import rasterio

    profile = {"driver": "GTiff", "width": 32, "height": 32, "count": 3, "dtype": "uint8"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.full((3, 32, 32), 7, np.uint8))
    return path


def _bad_input(kind, tmp_path, data_root):
    """(dataset spec, extra overrides, text the one-line error must contain) for each kind of broken input."""
    if kind == "zero-byte":
        return f"folder:{_scene_folder(tmp_path / 'd', 'empty.jpg', b'')}", [], "empty.jpg"
    if kind == "not-an-image":
        return f"folder:{_scene_folder(tmp_path / 'd', 'notes.jpg', b'meeting notes, not pixels')}", [], "notes.jpg"
    if kind == "empty-class-folder":
        return f"folder:{_scene_folder(tmp_path / 'd', empty_class=True)}", [], "sand"
    if kind == "geotiff-without-crs":
        return f"geotiff:{_plain_geotiff(tmp_path / 'plain.tif')}", [], "plain.tif"
    if kind == "wrong-band-count":
        s2 = data_root / "sen1floods11_sample" / "Spain_7370579_S2Hand.tif"
        return f"geotiff:{s2}", ["--data.dataset_options", "{expected_bands: 4}"], "Spain_7370579_S2Hand.tif"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["zero-byte", "not-an-image", "empty-class-folder", "geotiff-without-crs",
                                  "wrong-band-count"])
def test_bad_input_is_one_line_naming_the_file_and_exit_2(kind, tmp_path, data_root, capsys):
    spec, extra, named = _bad_input(kind, tmp_path, data_root)
    code = main(["pretrain", "moco", "--config", "moco_resnet18_eurosat", "--data.dataset", spec, *extra,
                 "--data.split", "all", "--data.batch_size", "4", "--model.image_size", "16",
                 "--model.queue_size", "8", "--trainer.max_steps", "1", "--trainer.progress_bar", "false",
                 "--trainer.out_dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in err
    assert last.startswith("rspretrain: error:") and named in last, last
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()


def test_a_successful_command_ends_the_process_group_and_a_failed_one_leaves_it(tmp_path):
    # An open gloo group at interpreter exit can abort a DDP rank (SIGABRT); a failed rank must not
    # start a collective shutdown the others may never join.
    import torch.distributed as dist

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        assert main(["info", str(tmp_path / "not_a_run")]) == 2
        assert dist.is_initialized()
        run = tmp_path / "run"
        run.mkdir()
        (run / "provenance.json").write_text("{}")
        assert main(["info", str(run)]) == 0
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_prepare_tiles_land_cover_scenes_from_the_command_line(data_root, tmp_path, capsys):
    zion = data_root / "zion_landsat8_nlcd2011"
    bands = ",".join(str(zion / f"landsat8_LC80380342015230_{b}.tif") for b in ("b2", "b3", "b4", "b5"))
    out = tmp_path / "tiles"
    assert main(["prepare", f"landcover:{bands}", "--out", str(out), "--workers", "1", "--no-progress",
                 "--option.land_cover", str(zion / "nlcd2011.tif"), "--option.scheme", "nlcd8", "--option.tile", "64",
                 "--option.stride", "64"]) == 0
    assert f"{out}: 374 tiles of 1 scene(s) (uint16), 8 classes" in capsys.readouterr().out  # 17 x 22 of 64 px
    assert main(["prepare", f"landcover:{bands}", "--out", str(out), "--option.scheme", "nlcd8"]) == 2
    assert "holds a set prepared from" in capsys.readouterr().err  # other options, same folder


def test_ctrl_c_in_pretrain_is_one_line_with_the_resume_command_and_exit_130(tmp_path, data_root):
    import os
    import signal
    import time

    out = tmp_path / "run"
    args = ["pretrain", "--config", "moco_resnet18_eurosat", "--data.root", str(data_root), "--data.max_per_class", "4",
            "--data.batch_size", "8", "--model.image_size", "32", "--model.queue_size", "16", "--model.backbone",
            "resnet10t", "--trainer.max_steps", "100000", "--trainer.ckpt_every_n_steps", "1", "--trainer.out_dir",
            str(out), "--trainer.progress_bar", "false"]
    proc = subprocess.Popen([sys.executable, "-m", "rspretrain.apps.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (out / "checkpoints" / "last.ckpt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("rspretrain: interrupted; the last checkpoint is kept, continue with: rspretrain pretrain")
    assert last.endswith(f"{out} --trainer.progress_bar false --resume")


def test_ctrl_c_in_any_other_command_is_one_line_and_exit_130(monkeypatch, capsys):
    import rspretrain.apps.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_info", interrupted)
    monkeypatch.setattr(cli, "cmd_evaluate", interrupted)
    assert main(["evaluate", "x.ckpt"]) == 130
    assert capsys.readouterr().err == "rspretrain: interrupted\n"


def test_a_positional_method_and_another_method_option_are_refused(capsys):
    assert main(["pretrain", "moco", "--method", "nope"]) == 2
    assert "METHOD 'moco' and --method 'nope' disagree" in capsys.readouterr().err


def test_out_of_range_values_are_one_line_before_any_data_is_read(capsys):
    for argv, key in ((["pretrain", "moco", "--data.batch_size", "0"], "data.batch_size must be >= 1, got 0"),
                      (["pretrain", "moco", "--data.batch_size", "-4"], "data.batch_size must be >= 1, got -4"),
                      (["pretrain", "moco", "--model.image_size", "0"], "model.image_size must be >= 1"),
                      (["pretrain", "moco", "--data.num_workers", "-1"], "data.num_workers must be >= 0"),
                      (["pretrain", "moco", "--model.queue_size", "0"], "model.queue_size must be >= 1")):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert key in err and len(err.strip().splitlines()) == 1, err


def test_a_pretraining_prints_none_of_the_other_libraries_expected_noise(tmp_path, data_root):
    # Lightning's litlogger tip and TPU/HPU lines, its pytree deprecation warning and its "weights_only was not set"
    # on the final save are expected and harmless; the user sees rspretrain's lines and the progress only.
    res = _run("pretrain", "--config", "moco_resnet18_eurosat", "--data.root", str(data_root), "--data.max_per_class",
               "4", "--data.batch_size", "8", "--model.image_size", "32", "--model.queue_size", "16",
               "--model.backbone", "resnet10t", "--trainer.max_steps", "2", "--trainer.progress_bar", "false",
               "--trainer.out_dir", str(tmp_path / "run"))
    assert res.returncode == 0, res.stderr[-2000:]
    output = res.stdout + res.stderr
    for noise in ("Tip", "litlogger", "TPU available", "HPU available", "LeafSpec", "weights_only", "Warning"):
        assert noise not in output, f"{noise!r} in the output:\n{output}"
    assert "rspretrain: fast step:" in output and "rspretrain: final checkpoint:" in output
