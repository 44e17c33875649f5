
import numpy as np
import torch

from rspretrain.apps.cli import main, split_section_overrides
from rspretrain.downstream.finetune.run import load_finetune_splits, read_finetune_summary
from rspretrain.pretrain.export import load_scene_classifier
from rspretrain.views.finetune_views import SceneClassificationViews


def test_split_section_overrides():
    rest, overrides = split_section_overrides(
        ["--method", "sskdnet", "--model.kd_weight", "0", "--optim.lr=0.1", "--epochs", "2"], ("model", "optim"))
    assert rest == ["--method", "sskdnet", "--epochs", "2"]
    assert overrides == ["--model.kd_weight", "0", "--optim.lr=0.1"]


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
