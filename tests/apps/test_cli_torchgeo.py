"""torchgeo both ways from the command line: pretrain on a ``torchgeo:`` dataset and hand the export to torchgeo's
tasks; score torchgeo's weights (a local file) on a ``torchgeo:`` dataset. Real runs on tiny files written here."""

import json

import numpy as np
import pytest
import torch

from rspretrain.apps.cli import _csv, main
from tests.data._torchgeo_fakes import write_eurosat, write_torchgeo_weights

S2_RGB = "torchgeo:ResNet18_Weights.SENTINEL2_RGB_MOCO"


@pytest.fixture(scope="module")
def eurosat(tmp_path_factory):
    root = tmp_path_factory.mktemp("eurosat")
    return root, write_eurosat(root)


def test_dataset_lists_keep_the_commas_inside_a_specs_options():
    assert _csv("eurosat, torchgeo:EuroSAT{root: /d, bands: [B04, B03]},folder:x") == [
        "eurosat", "torchgeo:EuroSAT{root: /d, bands: [B04, B03]}", "folder:x"]


def test_pretrain_on_a_torchgeo_dataset_and_torchgeo_builds_a_task_on_the_export(eurosat, tmp_path, capsys):
    from torchgeo.trainers import ClassificationTask

    from rspretrain.pretrain.run import load_method

    root, arrays = eurosat
    code = main(["pretrain", "moco", "--config", "moco_resnet18_eurosat",
                 "--data.dataset", "torchgeo:EuroSAT{bands: [B04, B03, B02, B08]}", "--data.root", str(root),
                 "--data.dataset_options", "{value_scale: 10000}", "--data.batch_size", "8",
                 "--model.image_size", "16", "--model.queue_size", "16", "--trainer.max_steps", "2",
                 "--trainer.progress_bar", "false", "--trainer.out_dir", str(tmp_path / "run")])
    assert code == 0
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    method = load_method(ckpt)
    assert method.band_names == ("B04", "B03", "B02", "B08") and method.hparams["value_scale"] == 10000
    # the band statistics are the dataset's own: the mean of the training files' B04 (index 3), divided by 10000
    train = [a for name, a in arrays.items() if int(name.rsplit("_", 1)[1][:-4]) <= 8]
    assert method.mean[0] == pytest.approx(np.mean([a[3] for a in train]) / 10000, rel=1e-5)

    assert main(["export", str(ckpt), "--to", str(tmp_path / "moco_s2"), "--format", "torchgeo"]) == 0
    out = capsys.readouterr().out
    assert "ClassificationTask(model='resnet18', weights=" in out and "in_channels=4" in out
    task = ClassificationTask(model="resnet18", weights=str(tmp_path / "moco_s2.ckpt"), in_channels=4, num_classes=3)
    ours = method.backbone_to_export().model.state_dict()
    theirs = task.model.state_dict()
    differing = [k for k, v in ours.items() if not torch.equal(theirs[k], v)]
    # named, with whether a differing tensor holds non-finite values (a CI run once failed here without a name)
    assert not differing, [(k, bool(torch.isfinite(ours[k]).all()), bool(torch.isfinite(theirs[k]).all()),
                            float((ours[k].float() - theirs[k].float()).abs().max())) for k in differing[:5]]


def test_evaluate_scores_torchgeo_weights_from_a_local_file_on_a_torchgeo_dataset(eurosat, tmp_path, capsys):
    from rspretrain.downstream.frozen.features import extract_features
    from rspretrain.downstream.frozen.knn import knn_predict
    from rspretrain.downstream.frozen.scene_benchmark import load_scene_splits
    from rspretrain.downstream.sources import encoder_specs

    weights = tmp_path / "resnet18_sentinel2_rgb_moco.pth"
    write_torchgeo_weights(weights)
    dataset = f"torchgeo:EuroSAT{{root: {eurosat[0]}, bands: [B04, B03, B02], value_scale: 10000}}"
    out = tmp_path / "eval"
    code = main(["evaluate", S2_RGB, "--weights-file", str(weights), "--dataset", dataset, "--image-size", "16",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "metrics.json").read_text())
    assert report["complete"] is True
    rows = {(r["model"], r["task"]): r for r in report["results"]}
    models = {model for model, _ in rows}
    assert models == {"image-statistics", "ResNet18_Weights.SENTINEL2_RGB_MOCO", "random-init"}
    assert all(r["dataset"] == dataset for r in report["results"])
    knn = rows[("ResNet18_Weights.SENTINEL2_RGB_MOCO", "knn")]
    assert (knn["n_train"], knn["n_test"]) == (24, 12)
    # the colour baseline separates the three spectra of the files (bright in blue, green, red) perfectly
    assert rows[("image-statistics", "knn")]["metrics"]["accuracy"] == 1.0
    assert rows[("image-statistics", "linear")]["metrics"]["accuracy"] == 1.0

    # the reported kNN score is that of the file's weights with the weights' preprocessing, recomputed by hand
    spec = encoder_specs(S2_RGB, image_size=16, weights_file=weights, with_random_init=False)[0]
    train, test = load_scene_splits(dataset)
    train_x, train_y = extract_features(spec, train, progress=False)
    test_x, test_y = extract_features(spec, test, progress=False)
    expected = float(np.mean(knn_predict(train_x, train_y, test_x, 3, k=20, temperature=0.07) == test_y))
    assert knn["metrics"]["accuracy"] == pytest.approx(expected)


@pytest.mark.parametrize("case, message", [
    ("band-order", r"band order \['B02', 'B03', 'B04'\] .* differs from the model's \['S2:B04', 'S2:B03', 'S2:B02'\]"),
    ("band-count", (r"data has 13 bands but the model expects 3 \(data \['B01', .*'B8A'\], model \['S2:B04', 'S2:B03', "
                   r"'S2:B02'\]\)")),
    ("missing-key", (r"w.pth: not in the layout of torchgeo:ResNet18_Weights.SENTINEL2_RGB_MOCO .*missing key "
                    r"'layer4.1.conv1.weight'")),
    ("no-file", r"give its weights file with --weights-file PATH"),
    ("unknown-weights", r"ResNet18_Weights has no 'SENTINEL2_RGB_MOCOV3'; it has .*SENTINEL2_RGB_MOCO"),
    ("unknown-dataset", r"torchgeo:EuroSATT: torchgeo.datasets has no dataset class 'EuroSATT'; did you mean EuroSAT"),
])
def test_bad_input_is_one_line_and_exit_2(eurosat, tmp_path, capsys, case, message):
    weights = tmp_path / "w.pth"
    write_torchgeo_weights(weights, drop="layer4.1.conv1.weight" if case == "missing-key" else None)
    bands = {"band-order": "[B02, B03, B04]", "band-count": "[B01, B02, B03, B04, B05, B06, B07, B08, B09, B10, B11, "
             "B12, B8A]"}.get(case, "[B04, B03, B02]")
    dataset = f"torchgeo:{'EuroSATT' if case == 'unknown-dataset' else 'EuroSAT'}{{root: {eurosat[0]}, bands: {bands}}}"
    source = S2_RGB + ("V3" if case == "unknown-weights" else "")
    argv = ["evaluate", source, "--dataset", dataset, "--image-size", "16", "--out", str(tmp_path / "eval")]
    code = main(argv + ([] if case == "no-file" else ["--weights-file", str(weights)]))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith("rspretrain: error:")
    assert __import__("re").search(message, last), last
