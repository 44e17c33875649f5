"""The online kNN monitor: scored at the right steps on a real run, logged to metrics.csv, equal to the offline kNN of
the same weights, invisible to training, and refusing bad settings in one line."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from rspretrain.core.errors import BandMismatchError, ConfigError, DataError
from rspretrain.downstream.frozen.features import EncoderSpec, extract_features
from rspretrain.downstream.frozen.knn import knn_predict
from rspretrain.downstream.frozen.knn_monitor import CURVES_FILE, KNN_METRIC, KNNMonitor, monitor_callbacks
from rspretrain.pretrain.config import load_config
from rspretrain.pretrain.run import load_checkpoint, load_method, pretrain

STEPS, EVERY = 7, 3


def _cfg(data_root, out, monitored: bool):
    overrides = {
        "data.root": str(data_root), "data.max_per_class": 10, "data.batch_size": 16, "model.image_size": 32,
        "model.queue_size": 32, "trainer.max_steps": STEPS, "trainer.out_dir": str(out), "trainer.progress_bar": False,
        "trainer.log_every_n_steps": 1, "trainer.accelerator": "cpu",
        # fp32, NCHW: the checkpoint reloaded for the offline check computes in the same layout and precision
        "trainer.precision": "32-true", "trainer.channels_last": False,
    }
    if monitored:
        overrides.update({"monitor.dataset": "eurosat", "monitor.every_n_steps": EVERY,
                          "monitor.max_train_per_class": 5, "monitor.max_test_per_class": 4})
    return load_config("moco_resnet18_eurosat", overrides)


def _column(run, key):
    with open(run / "logs" / "metrics.csv", newline="") as f:
        return {int(r["step"]): float(r[key]) for r in csv.DictReader(f) if r.get(key)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_root):
    """The same 7-step MoCo run with the monitor (every 3 steps, 50 / 40 EuroSAT images) and without it."""
    tmp = tmp_path_factory.mktemp("knn_monitor")
    cfg = _cfg(data_root, tmp / "monitored", True)
    (monitor,) = monitor_callbacks(cfg)
    monitored = pretrain(cfg, callbacks=[monitor])
    plain = pretrain(_cfg(data_root, tmp / "plain", False))
    return monitor, monitored, plain


def test_it_scores_at_step_0_every_n_steps_and_after_the_last_into_metrics_csv(runs):
    monitor, final, _ = runs
    steps = [p.step for p in monitor.history]
    assert steps == [0, 3, 6, 7]  # step 0 (random init), every 3 steps, and the last step (7 is not a multiple)
    assert all(math.isfinite(p.accuracy) and 0.0 <= p.accuracy <= 1.0 for p in monitor.history)
    logged = _column(final.parent.parent, KNN_METRIC)
    assert logged == {p.step: pytest.approx(p.accuracy) for p in monitor.history}
    assert len(monitor.train) == 50 and len(monitor.test) == 40  # 10 EuroSAT classes x 5 / x 4


def test_its_value_is_the_offline_knn_of_the_same_features_and_of_the_final_checkpoint(runs):
    monitor, final, _ = runs
    train_f, train_l, test_f, test_l = monitor.last_features
    offline = float((knn_predict(train_f, train_l, test_f, 10, k=20, temperature=0.07) == test_l).mean())
    assert offline == monitor.history[-1].accuracy  # exact: the same features, the same kNN
    # The last point was scored after the last step: the weights of the final checkpoint. Re-encoded offline, the
    # same images give the same features and the same accuracy.
    method = load_method(final)
    spec = EncoderSpec("final", method.backbone_to_export(), method.mean, method.std, method.input_size(),
                       method.band_names)
    f_train, l_train = extract_features(spec, monitor.train, progress=False)
    f_test, l_test = extract_features(spec, monitor.test, progress=False)
    np.testing.assert_allclose(f_train, train_f, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(f_test, test_f, rtol=1e-5, atol=1e-6)
    assert float((knn_predict(f_train, l_train, f_test, 10) == l_test).mean()) == monitor.history[-1].accuracy


def test_training_is_the_same_with_and_without_the_monitor(runs):
    _, monitored, plain = runs
    assert _column(monitored.parent.parent, "train/loss") == _column(plain.parent.parent, "train/loss")
    a, b = load_checkpoint(monitored)["state_dict"], load_checkpoint(plain)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # BatchNorm statistics included


def test_the_run_draws_its_loss_and_knn_curves(runs, tmp_path):
    from rspretrain.downstream.report.plot import plot_training_curves

    _, final, plain = runs
    png = final.parent.parent / CURVES_FILE
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 200_000
    assert not (plain.parent.parent / CURVES_FILE).exists()  # no monitor, no callback to draw it
    # The plot function alone: a run without the monitor gets the loss panel only; a log without losses is an error.
    assert plot_training_curves(plain.parent.parent / "logs" / "metrics.csv", tmp_path / "loss.png").is_file()
    (tmp_path / "knn_only.csv").write_text(f"step,{KNN_METRIC}\n0,0.25\n5,0.5\n")  # a run that logged no loss yet
    assert plot_training_curves(tmp_path / "knn_only.csv", tmp_path / "knn.png").is_file()
    (tmp_path / "empty.csv").write_text("step,epoch\n0,0\n")
    with pytest.raises(DataError, match="no train/loss or monitor/knn_accuracy values"):
        plot_training_curves(tmp_path / "empty.csv", tmp_path / "x.png")


def test_a_resumed_run_is_scored_where_it_continues_and_keeps_the_earlier_points(tmp_path, data_root):
    def cfg(steps, every):
        return load_config("moco_resnet18_eurosat", {
            "data.root": str(data_root), "data.max_per_class": 4, "data.batch_size": 8, "model.image_size": 32,
            "model.queue_size": 16, "trainer.max_steps": steps, "trainer.out_dir": str(tmp_path),
            "trainer.progress_bar": False, "trainer.log_every_n_steps": 1, "trainer.accelerator": "cpu",
            "monitor.dataset": "eurosat", "monitor.every_n_steps": every, "monitor.max_train_per_class": 2,
            "monitor.max_test_per_class": 2})

    first = cfg(4, 2)
    pretrain(first, callbacks=monitor_callbacks(first))
    second = cfg(7, 3)  # the monitor may change on --resume: it does not change what is trained
    (monitor,) = monitor_callbacks(second)
    pretrain(second, callbacks=[monitor], resume=True)
    assert [p.step for p in monitor.history] == [4, 6, 7]
    # --resume kept the rows before step 4; the point at step 4 (the checkpoint's weights) was scored again
    assert sorted(_column(tmp_path, KNN_METRIC)) == [0, 2, 4, 6, 7]


def test_train_mode_is_restored_submodule_by_submodule(data_root):
    from rspretrain.pretrain.methods import create

    model = create("moco", image_size=32, queue_size=32)
    model.train()
    model.backbone.model.layer1.eval()  # a part kept in eval mode on purpose stays in eval mode
    before = {name: m.training for name, m in model.named_modules()}
    monitor = KNNMonitor("eurosat", root=str(data_root), max_train_per_class=2, max_test_per_class=2)
    point = monitor.evaluate(model, step=5)
    assert {name: m.training for name, m in model.named_modules()} == before
    assert point.step == 5 and 0.0 <= point.accuracy <= 1.0 and torch.is_grad_enabled()


@pytest.mark.parametrize(("key", "value", "message"), [
    ("monitor.every_n_steps", 0, "monitor.every_n_steps must be >= 1, got 0"),
    ("monitor.k", 0, "monitor.k must be >= 1, got 0"),
    ("monitor.temperature", 0, "monitor.temperature must be > 0, got 0"),
    ("monitor.max_train_per_class", -3, "monitor.max_train_per_class must be >= 1, got -3"),
    ("monitor.batch_size", "many", "monitor.batch_size"),
    ("monitor.kk", 3, "monitor.kk"),
])
def test_bad_config_values_are_one_line_errors_naming_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")) as err:
        load_config("moco_resnet18_eurosat", {key: value})
    assert "\n" not in str(err.value)


def test_an_unknown_dataset_and_a_monitor_left_out_are_one_line_errors(data_root, tmp_path, capsys):
    from rspretrain.apps.cli import main

    assert main(["pretrain", "moco", "--monitor.dataset", "eurosatt", "--trainer.out_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rspretrain: error: monitor.dataset: unknown evaluation dataset 'eurosatt'; valid: eurosat, "
                          "ucmerced, folder:PATH") and err.count("\n") == 1
    cfg = load_config("moco_resnet18_eurosat", {"monitor.dataset": "eurosatt", "trainer.out_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"^monitor\.dataset: unknown evaluation dataset 'eurosatt'") as err:
        monitor_callbacks(cfg)
    assert "\n" not in str(err.value)
    cfg = load_config("moco_resnet18_eurosat", {"monitor.dataset": "eurosat", "trainer.out_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"monitor\.dataset is 'eurosat' but pretrain\(\) got no monitor callback"):
        pretrain(cfg)  # refused before anything is written, rather than silently not monitored
    assert not any(tmp_path.iterdir())
    assert monitor_callbacks(load_config("moco_resnet18_eurosat")) == []  # off by default


def test_bands_other_than_the_runs_are_one_line_naming_both(data_root):
    class FourBandRun(torch.nn.Module):
        band_names = ("blue", "green", "red", "nir")
        mean, std = (0.5,) * 4, (0.25,) * 4

    monitor = KNNMonitor("eurosat", root=str(data_root), max_train_per_class=1, max_test_per_class=1)
    with pytest.raises(BandMismatchError) as err:
        monitor.check_bands(FourBandRun())
    assert str(err.value) == ("monitor.dataset 'eurosat' vs the pretraining data: data has 3 bands ['red', 'green', "
                              "'blue'] but the model expects 4 ['blue', 'green', 'red', 'nir']")
    FourBandRun.band_names, FourBandRun.mean = ("blue", "green", "red"), (0.5,) * 3
    with pytest.raises(BandMismatchError, match=r"band order \['red', 'green', 'blue'\].*differs from the model's"):
        monitor.check_bands(FourBandRun())


def test_the_quickstart_has_the_monitor_off_by_default_and_a_flag_to_turn_it_on():
    from rspretrain.apps.cli import QUICKSTART_MONITOR, parse_command_line

    assert parse_command_line(["quickstart"]).knn_monitor is False  # it costs more than 5 % (knn_monitor_overhead)
    assert parse_command_line(["quickstart", "--knn-monitor"]).knn_monitor is True
    (monitor,) = monitor_callbacks(load_config("moco_resnet18_eurosat", QUICKSTART_MONITOR))
    assert (monitor.dataset, monitor.every_n_steps, monitor.max_train_per_class, monitor.max_test_per_class) == (
        "eurosat", 200, 50, 50)


DDP_SCRIPT = r'''
import json, sys
import torch
torch.set_num_threads(1)
from rspretrain.apps.cli import destroy_process_group
from rspretrain.downstream.frozen.knn_monitor import monitor_callbacks
from rspretrain.pretrain.config import load_config
from rspretrain.pretrain.run import pretrain

cfg = load_config("moco_resnet18_eurosat", json.loads(sys.argv[1]))
(monitor,) = monitor_callbacks(cfg)
pretrain(cfg, callbacks=[monitor])
rank = torch.distributed.get_rank()
with open(f"{sys.argv[2]}/rank{rank}.json", "w") as f:
    json.dump({"steps": [p.step for p in monitor.history], "held": [len(monitor.train), len(monitor.test)]}, f)
destroy_process_group()
'''


@pytest.mark.slow
def test_under_two_process_ddp_rank_0_scores_and_no_rank_waits_forever(tmp_path, data_root):
    import json
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    overrides = {
        "data.root": str(data_root), "data.max_per_class": 4, "data.batch_size": 4, "model.image_size": 32,
        "model.queue_size": 16, "trainer.max_steps": 4, "trainer.devices": 2, "trainer.strategy": "ddp",
        "trainer.accelerator": "cpu", "trainer.progress_bar": False, "trainer.out_dir": str(tmp_path / "run"),
        "trainer.log_every_n_steps": 1, "monitor.dataset": "eurosat", "monitor.every_n_steps": 2,
        "monitor.max_train_per_class": 3, "monitor.max_test_per_class": 2,
    }
    script = tmp_path / "ddp_monitor.py"
    script.write_text(DDP_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1", f"--master_port={port}",
           str(script), json.dumps(overrides), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == {"steps": [0, 2, 4], "held": [30, 20]}
    assert ranks[1] == {"steps": [], "held": [30, 20]}  # every rank holds and checks the subset; rank 0 scores
    assert sorted(_column(tmp_path / "run", KNN_METRIC)) == [0, 2, 4]
    assert (tmp_path / "run" / CURVES_FILE).is_file()  # drawn once, by rank 0
