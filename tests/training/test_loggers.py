"""Loggers by name: W&B (offline) and MLflow (a local store) get the same losses as the CSV record, and a resumed run
continues their runs; bad names and options are one config line."""

import csv
import json
import struct

import pytest

from rspretrain.apps.cli import main
from rspretrain.core.errors import ConfigError
from rspretrain.training.trainer import TrainerConfig

TINY = ["pretrain", "moco", "--config", "moco_resnet18_eurosat", "--data.max_per_class", "4", "--data.batch_size",
        "8", "--model.image_size", "32", "--model.queue_size", "16", "--trainer.progress_bar", "false",
        "--trainer.log_every_n_steps", "1", "--trainer.ckpt_every_n_steps", "3"]


def _csv_losses(out):
    with open(out / "logs" / "metrics.csv") as f:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")}


def _mlflow_losses(out, run_id):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"file:{(out / 'mlruns').resolve()}")
    return {m.step: m.value for m in client.get_metric_history(run_id, "train/loss")}


def _wandb_losses(run_file):
    """The ``train/loss`` history rows of a W&B offline run file: a 7-byte header (``:W&B``, magic, version), then
    LevelDB log-format records (32 KiB blocks, 7-byte chunk headers) holding ``wandb_internal_pb2.Record`` protobufs.
    wandb 0.31 ships no reader for it (``wandb sync`` needs the network)."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, chunks, losses = run_file.read_bytes(), 32768, 7, [], {}
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if kind == 0 and length == 0:  # the zero padding at a block's end
            pos += left - 7
            continue
        chunks.append(data[pos:pos + length])
        pos += length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            if record.WhichOneof("record_type") == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                if "train/loss" in items:
                    losses[int(items["trainer/global_step"])] = items["train/loss"]
    return losses


def test_wandb_and_mlflow_log_the_csv_losses_offline_and_a_resumed_run_continues_them(tmp_path, data_root,
                                                                                        monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    args = [*TINY, "--data.root", str(data_root), "--trainer.out_dir", str(out),
            "--trainer.loggers", "[csv, tensorboard, wandb, mlflow]"]
    assert main([*args, "--trainer.max_steps", "4"]) == 0
    runs = json.loads((out / "logs" / "logger_runs.json").read_text())
    assert set(runs) == {"wandb", "mlflow"}
    first = _csv_losses(out)
    assert sorted(first) == [0, 1, 2, 3]
    assert _mlflow_losses(out, runs["mlflow"]) == pytest.approx(first, rel=1e-6)
    (run_file,) = out.glob(f"wandb/offline-run-*-{runs['wandb']}/run-{runs['wandb']}.wandb")
    assert _wandb_losses(run_file) == pytest.approx(first, rel=1e-6)
    assert list((out / "logs").glob("events.out.tfevents.*"))  # TensorBoard still writes beside them

    # --resume continues the same MLflow run (steps 4, 5 added to 0-3) and the same W&B run id
    assert main([*args, "--trainer.max_steps", "6", "--resume"]) == 0
    assert json.loads((out / "logs" / "logger_runs.json").read_text()) == runs
    both = _csv_losses(out)
    assert sorted(both) == list(range(6)) and {k: both[k] for k in range(3)} == pytest.approx({k: first[k] for k in
                                                                                              range(3)})
    assert _mlflow_losses(out, runs["mlflow"]) == pytest.approx(both, rel=1e-6)
    resumed = [p for p in out.glob(f"wandb/offline-run-*-{runs['wandb']}/run-{runs['wandb']}.wandb") if p != run_file]
    assert len(resumed) == 1 and set(_wandb_losses(resumed[0])) == {4, 5}  # from the final checkpoint (step 4) on


@pytest.mark.parametrize("loggers, options, message", [
    (["csv", "neptune"], {}, "trainer.loggers: 'neptune' is not one of csv, tensorboard, wandb, mlflow"),
    (["tensorboard"], {}, "trainer.loggers: csv cannot be left out"),
    ("wandb", {}, "trainer.loggers: expected a list"),
    (["csv"], {"wandb": {"offline": True}}, "trainer.logger_options.wandb: not a chosen logger"),
    (["csv", "mlflow"], {"mlflow": {"tracking": "x"}}, "trainer.logger_options.mlflow: unknown argument(s) tracking "
                                                        "of MLFlowLogger"),
])
def test_a_bad_logger_choice_is_one_config_line_naming_it(loggers, options, message):
    with pytest.raises(ConfigError) as err:
        TrainerConfig(loggers=loggers, logger_options=options)
    assert str(err.value).startswith(message)


def test_an_unknown_logger_on_the_command_line_exits_2_with_one_line(tmp_path, data_root, capsys):
    code = main([*TINY, "--data.root", str(data_root), "--trainer.out_dir", str(tmp_path / "run"),
                 "--trainer.loggers", "[csv, comet]"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "'comet' is not one of csv, tensorboard, wandb, mlflow" in err[0], err
    assert not (tmp_path / "run" / "checkpoints").exists()
