"""Run folders cannot be clobbered: a lock, --resume or --overwrite, config changes refused on resume, no stale
temp files."""

import json
import subprocess
import sys
import time

import pytest
import torch

from rspretrain.apps.cli import main
from rspretrain.core.errors import ConfigError, DataError
from rspretrain.training.run_folder import (
    RunFolderLock,
    config_changes,
    prepare_run_folder,
    remove_stale_temp_files,
)


def _hold_lock_in_another_process(folder):
    code = ("import sys, time; from rspretrain.training.run_folder import RunFolderLock\n"
            "with RunFolderLock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_while_the_first_holds_the_folder(tmp_path):
    proc = _hold_lock_in_another_process(tmp_path / "run")
    try:
        with pytest.raises(DataError, match=rf"another run is writing to this folder \(pid {proc.pid}\)"):
            RunFolderLock(tmp_path / "run").__enter__()
    finally:
        proc.kill()
        proc.wait()
    # The kernel drops the lock of a killed process: the folder is free again, no stale lock to remove.
    with RunFolderLock(tmp_path / "run"):
        pass


def test_a_folder_with_a_run_needs_resume_or_overwrite(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (out / "config.yaml").write_text("method: moco\n")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="holds a run already: continue it with --resume, or replace it with --ove"):
        prepare_run_folder(out, resume=False, overwrite=False)
    with pytest.raises(ConfigError, match="give one"):
        prepare_run_folder(out, resume=True, overwrite=True)
    prepare_run_folder(out, resume=True, overwrite=False)
    assert (out / "checkpoints" / "last.ckpt").exists()
    prepare_run_folder(out, resume=False, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # only the run's own files go


def test_stale_temp_files_of_killed_writes_are_removed(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    stale = [out / "checkpoints" / ".last.ckpt.k2j3.tmp", out / ".config.yaml.abc.tmp"]
    for path in stale:
        path.write_bytes(b"0" * 1000)
    keep = out / "checkpoints" / "last.ckpt"
    keep.write_bytes(b"x")
    assert sorted(remove_stale_temp_files(out)) == sorted(stale)
    assert not any(p.exists() for p in stale) and keep.exists()


def test_config_changes_lists_what_changes_the_training_only():
    before = {"method": "moco", "seed": 0, "data": {"dataset": "eurosat", "batch_size": 64, "num_workers": 0},
              "model": {"queue_size": 4096}, "optim": {"lr": 0.03}, "views": {}, "trainer": {"devices": 1,
              "max_steps": 100, "out_dir": "a"}}
    now = {**before, "data": {**before["data"], "batch_size": 32, "num_workers": 4}, "optim": {"lr": 0.1},
           "trainer": {"devices": 2, "max_steps": 500, "out_dir": "b"}}
    assert config_changes(before, now) == ["data.batch_size: 64 -> 32", "optim.lr: 0.03 -> 0.1",
                                           "trainer.devices: 1 -> 2"]
    assert config_changes(before, before) == []


TINY = ["pretrain", "moco", "--config", "moco_resnet18_eurosat", "--data.max_per_class", "4", "--data.batch_size",
        "8", "--model.image_size", "32", "--model.queue_size", "16", "--trainer.progress_bar", "false"]


def test_the_cli_keeps_a_finished_run_from_being_clobbered(tmp_path, data_root, capsys):
    out = tmp_path / "run"
    args = [*TINY, "--data.root", str(data_root), "--trainer.out_dir", str(out), "--trainer.max_steps", "4",
            "--trainer.ckpt_every_n_steps", "2"]
    assert main(args) == 0
    step = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]
    capsys.readouterr()
    # 1. Again without --resume: refused, the run untouched.
    assert main(args[:-4] + ["--trainer.max_steps", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds a run already" in err and len(err.splitlines()) == 1
    assert torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == step
    # 3. --resume with another lr and batch: refused, naming the changes; allowed when asked.
    changed = [*args[:-4], "--trainer.max_steps", "6", "--optim.lr", "0.1", "--data.batch_size", "4", "--resume"]
    assert main(changed) == 2
    err = capsys.readouterr().err
    assert "optim.lr: 0.03 -> 0.1" in err and "data.batch_size: 8 -> 4" in err and "--allow-config-change" in err
    assert main([*changed, "--allow-config-change"]) == 0
    assert torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 6
    # A stale temp file of a killed checkpoint write is removed by the next start.
    stale = out / "checkpoints" / ".last.ckpt.dead.tmp"
    stale.write_bytes(b"0" * 100)
    # --overwrite replaces the run: its files start over.
    assert main([*args[:-4], "--trainer.max_steps", "2", "--overwrite"]) == 0
    assert not stale.exists()
    assert torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 2
    assert "earlier_segments" not in json.loads((out / "provenance.json").read_text())  # a new run, not a segment


def test_the_cli_refuses_a_second_run_into_a_locked_folder(tmp_path, data_root, capsys):
    out = tmp_path / "run"
    proc = _hold_lock_in_another_process(out)
    try:
        start = time.monotonic()
        assert main([*TINY, "--data.root", str(data_root), "--trainer.out_dir", str(out),
                     "--trainer.max_steps", "1"]) == 2
        assert time.monotonic() - start < 5  # refused before any data is read
    finally:
        proc.kill()
        proc.wait()
    err = capsys.readouterr().err.strip()
    assert f"another run is writing to this folder (pid {proc.pid})" in err and len(err.splitlines()) == 1
    assert not (out / "config.yaml").exists()
