import pytest

from rspretrain.core.errors import ConfigError
from rspretrain.downstream.finetune.run import (
    FinetuneConfig,
    load_finetune_splits,
    read_finetune_summary,
    run_finetune,
)


def test_ucmerced_ratio_splits_are_disjoint_and_stratified(data_root):
    train, test = load_finetune_splits("ucmerced", str(data_root), train_ratio=0.5, image_size=32,
                                       max_train_per_class=3, max_test_per_class=2)
    assert len(train) == 21 * 3 and len(test) == 21 * 2
    assert train.image_shape == (3, 32, 32)
    assert not set(train.files) & set(test.files)
    assert train.class_counts() == {c: 3 for c in train.classes}


def test_eurosat_has_a_fixed_split_and_unknown_names_are_config_errors(data_root):
    with pytest.raises(ConfigError, match="train_ratio does not apply"):
        load_finetune_splits("eurosat", str(data_root), train_ratio=0.5)
    with pytest.raises(ConfigError, match="resisc"):
        load_finetune_splits("resisc45", str(data_root))


def test_unknown_model_key_is_a_config_error_before_training(tmp_path):
    cfg = FinetuneConfig(method="sskdnet", model={"kd_wieght": 0.0}, out_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="kd_wieght"):
        run_finetune(cfg)
    with pytest.raises(ConfigError, match="model.shuffle"):
        run_finetune(FinetuneConfig(method="sskdnet", model={"shuffle": "sometimes"}, out_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="unknown fine-tuning method"):
        run_finetune(FinetuneConfig(method="cmid", out_dir=str(tmp_path)))


def test_a_global_batch_that_does_not_split_over_the_devices_is_refused(tmp_path, data_root):
    cfg = FinetuneConfig(dataset="eurosat", root=str(data_root), image_size=32, max_train_per_class=2,
                         max_test_per_class=1, batch_size=5, devices=2, out_dir=str(tmp_path), progress=False)
    with pytest.raises(ConfigError, match="batch_size 5 does not split evenly over 2 devices"):
        run_finetune(cfg)


def test_folder_dataset_is_split_by_ratio(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("forest", "water"):
        (tmp_path / cls).mkdir()
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    train, test = load_finetune_splits(f"folder:{tmp_path}", train_ratio=0.5, image_size=16, max_test_per_class=2)
    assert train.class_counts() == {"forest": 3, "water": 3} and train.image_shape == (3, 16, 16)
    assert len(test) == 4 and not set(train.files) & set(test.files)


def test_interrupted_finetuning_resumes_to_the_uninterrupted_result(tmp_path):
    """A run killed in its second epoch and resumed scores and exports exactly what the whole run does
    (step-keyed data order and augmentation draws, checkpoint after every epoch)."""
    import json

    import lightning as L
    import pytest
    import torch
    from safetensors.torch import load_file

    class Interrupt(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 6:
                raise RuntimeError("killed")

    def cfg(out, resume=False):
        return FinetuneConfig(method="finetune", dataset="eurosat", image_size=32, max_train_per_class=4,
                              max_test_per_class=2, epochs=2, batch_size=8, out_dir=str(out), accelerator="cpu",
                              progress=False, resume=resume)

    whole = run_finetune(cfg(tmp_path / "whole"))
    assert whole["steps"] == 10 and (tmp_path / "whole" / "checkpoints" / "last.ckpt").is_file()
    with pytest.raises(RuntimeError, match="killed"):
        run_finetune(cfg(tmp_path / "killed"), callbacks=[Interrupt()])
    assert not (tmp_path / "killed" / "metrics.json").exists()
    resumed = run_finetune(cfg(tmp_path / "killed", resume=True))
    assert resumed["resumed_from"].endswith("last.ckpt") and resumed["steps"] == 10
    assert resumed["overall_accuracy"] == whole["overall_accuracy"]
    assert resumed["confusion_matrix"] == whole["confusion_matrix"]
    predictions = json.loads((tmp_path / "whole" / "predictions.json").read_text())
    correct = [y == p for y, p in zip(predictions["label"], predictions["prediction"])]
    assert len(correct) == whole["n_test"] == 20 and sum(correct) / len(correct) == whole["overall_accuracy"]
    assert predictions == json.loads((tmp_path / "killed" / "predictions.json").read_text())
    a = load_file(tmp_path / "whole" / "backbone.safetensors")
    b = load_file(tmp_path / "killed" / "backbone.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    saved = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    record = saved["meta"]["provenance"]
    assert record["seed"] == 0 and record["config"]["resume"] is True and "git_commit" in record
    (result,) = saved["results"]
    assert result["model"] == "random-init" and result["task"] == "finetune" and result["dataset"] == "eurosat"
    assert result["metrics"]["overall_accuracy"] == whole["overall_accuracy"]
    assert read_finetune_summary(tmp_path / "killed" / "metrics.json")["steps"] == 10
    oa, (lo, hi) = whole["overall_accuracy"], whole["overall_accuracy_ci"]
    table = (tmp_path / "whole" / "results.md").read_text()
    assert "| model | eurosat finetune OA | eurosat finetune mean class acc. |" in table
    assert f"| random-init | {100 * oa:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] |" in table
    assert (tmp_path / "whole" / "scores.png").stat().st_size > 5_000
