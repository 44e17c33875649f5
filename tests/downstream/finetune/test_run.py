import pytest

from rspretrain.core.errors import ConfigError
from rspretrain.downstream.finetune.run import FinetuneConfig, load_finetune_splits, run_finetune


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
