
import numpy as np
import torch

from rspretrain.apps.cli import main, parse_command_line
from rspretrain.downstream.finetune.run import load_finetune_splits, read_finetune_summary
from rspretrain.pretrain.export import load_scene_classifier
from rspretrain.views.finetune_views import SceneClassificationViews


def test_finetune_options_come_from_config_files_and_section_overrides(tmp_path, capsys):
    import pytest
    import yaml

    config = tmp_path / "finetune.yaml"
    config.write_text("method: sskdnet\nepochs: 2\ntrain_ratio: 0.5\nmodel: {kd_weight: 0.5}\n")
    args = parse_command_line(["finetune", "--config", str(config), "--model.kd_weight", "0", "--optim.lr=0.1",
                               "--epochs", "3"])
    assert (args.command, args.method, args.epochs, args.train_ratio) == ("finetune", "sskdnet", 3, 0.5)
    assert args.model == {"kd_weight": 0} and args.optim == {"lr": 0.1} and args.augment == {}
    with pytest.raises(SystemExit) as stop:
        parse_command_line(["finetune", "--config", str(config), "--print_config"])
    assert stop.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["method"] == "sskdnet" and printed["model"] == {"kd_weight": 0.5} and printed["epochs"] == 2
    assert main(["finetune", "--epochs", "many"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "epochs" in err and "many" in err


def test_finetune_one_epoch_on_real_ucmerced(tmp_path, data_root, capsys):
    out = tmp_path / "run"
    args = ["finetune", "--method", "sskdnet", "--dataset", "ucmerced", "--train-ratio", "0.5",
            "--data-root", str(data_root), "--max-train-per-class", "2", "--max-test-per-class", "1",
            "--image-size", "32", "--epochs", "1", "--batch-size", "21", "--no-progress", "--out", str(out),
            "--model.branch_width", "16", "--model.fusion_channels", "32"]
    assert main(args) == 0
    metrics = read_finetune_summary(out / "metrics.json")
    cm = np.array(metrics["confusion_matrix"])
    assert cm.shape == (21, 21) and cm.sum() == metrics["n_test"] == 21
    assert metrics["n_train"] == 42 and metrics["steps"] == 2 and metrics["hyper_parameters"]["branch_width"] == 16
    assert set(metrics["per_class_accuracy"]) == set(metrics["classes"])
    assert np.trace(cm) / cm.sum() == metrics["overall_accuracy"]
    assert (out / "confusion_matrix.png").is_file() and (out / "backbone.safetensors").is_file()
    assert "overall accuracy" in capsys.readouterr().out
    # the exported inference network reproduces the reported confusion matrix
    model = load_scene_classifier(out / "model.safetensors", band_names=("red", "green", "blue"))
    _, test = load_finetune_splits("ucmerced", str(data_root), 0.5, 32, 2, 1)
    meta = model.rs_meta
    views = SceneClassificationViews(32, meta["mean"], meta["std"], meta["value_scale"])
    batch = test.__getitems__(list(range(len(test))))
    with torch.no_grad():
        pred = model(views.test_view(batch["image"])).argmax(1).numpy()
    again = np.zeros_like(cm)
    np.add.at(again, (batch["label"].numpy(), pred), 1)
    assert np.array_equal(again, cm)


def test_unknown_finetune_override_is_one_line_error(tmp_path, data_root, capsys):
    code = main(["finetune", "--method", "finetune", "--data-root", str(data_root), "--out", str(tmp_path),
                 "--model.kd_weight", "0"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "model.kd_weight" in err and err.startswith("rspretrain: error:")


def test_finetune_and_dense_refuse_an_unknown_trainer_argument_before_any_data(capsys):
    assert main(["finetune", "--dataset", "nowhere", "--trainer.gradient_clip_vall", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "rspretrain: error: unknown lightning.Trainer argument(s): trainer.gradient_clip_vall"
    assert main(["evaluate", "random:resnet18", "--task", "change", "--trainer.max_epochz", "1"]) == 2
    assert "trainer.max_epochz" in capsys.readouterr().err
