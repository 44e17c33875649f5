import numpy as np
import pytest
import torch
from torch import nn

from rspretrain.core.errors import BandMismatchError, ConfigError, DataError
from rspretrain.downstream.frozen.features import EncoderSpec, extract_features, preprocess_images

from ._fakes import FakeSceneDataset, Flatten, MeanPool


def _constant_rgb(values: list[tuple[int, int, int]], size: int = 4) -> FakeSceneDataset:
    images = torch.tensor(values, dtype=torch.uint8).view(-1, 3, 1, 1).expand(-1, 3, size, size).contiguous()
    return FakeSceneDataset(images, list(range(len(values))))


def test_normalisation_matches_hand_computed_values():
    # 51/255 = 0.2, 102/255 = 0.4, 204/255 = 0.8; (x - 0.5) / std with std = (0.1, 0.2, 0.4) -> (-3, -0.5, 0.75).
    dataset = _constant_rgb([(51, 102, 204)])
    spec = EncoderSpec("pool", MeanPool(), mean=(0.5, 0.5, 0.5), std=(0.1, 0.2, 0.4), image_size=4)
    features, labels = extract_features(spec, dataset, progress=False)
    assert features.dtype == np.float32 and labels.dtype == np.int64
    np.testing.assert_allclose(features, [[-3.0, -0.5, 0.75]], atol=1e-5)
    np.testing.assert_array_equal(labels, [0])


def test_resize_is_bilinear_antialiased_before_encoder():
    # Columns 0,0,255,255 downsampled 4 -> 2 px: the antialiased triangle filter (support 2 input px) weights the
    # input columns 0.75, 0.75, 0.25 around each output column, so the outputs are 1/7 and 6/7 of full scale.
    # Normalising with mean 0.5, std 0.25 gives -10/7 and +10/7. A plain (non-antialiased) bilinear resize would give
    # 0 and 1 here, nearest would too; both would fail this test.
    images = torch.tensor([0, 0, 255, 255], dtype=torch.uint8).repeat(4, 1).view(1, 1, 4, 4)
    dataset = FakeSceneDataset(images, [0], band_names=("gray",))
    spec = EncoderSpec("flat", Flatten(), mean=(0.5,), std=(0.25,), image_size=2, band_names=("gray",))
    features, _ = extract_features(spec, dataset, progress=False)
    assert features.shape == (1, 4)
    np.testing.assert_allclose(features[0], [-10 / 7, 10 / 7, -10 / 7, 10 / 7], atol=1e-5)


def test_no_resize_when_size_already_matches():
    images = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
    out = preprocess_images(images, 1.0, mean=(0.0,), std=(1.0,), image_size=4)
    np.testing.assert_array_equal(out.flatten().numpy(), np.arange(16, dtype=np.float32))


def test_batches_keep_dataset_order_and_use_getitems():
    values = [(10 * i, 20 * i, 30 * i) for i in range(5)]
    dataset = _constant_rgb(values)
    dataset.labels = torch.tensor([4, 3, 2, 1, 0])
    spec = EncoderSpec("pool", MeanPool(), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), image_size=4)
    features, labels = extract_features(spec, dataset, batch_size=2, progress=False)
    assert dataset.calls == [[0, 1], [2, 3], [4]]
    np.testing.assert_allclose(features, np.array(values, dtype=np.float32) / 255.0, atol=1e-6)
    np.testing.assert_array_equal(labels, [4, 3, 2, 1, 0])


def test_value_scale_is_applied():
    images = torch.full((1, 1, 2, 2), 1000, dtype=torch.int16)  # e.g. 16-bit reflectance, 10000 = 1.0
    dataset = FakeSceneDataset(images, [0], band_names=None, value_scale=10000.0)
    spec = EncoderSpec("pool", MeanPool(), mean=(0.0,), std=(0.5,), image_size=2)
    features, _ = extract_features(spec, dataset, progress=False)
    np.testing.assert_allclose(features, [[0.2]], atol=1e-6)


def test_band_order_mismatch_names_both_lists():
    dataset = _constant_rgb([(1, 2, 3)])
    spec = EncoderSpec("bgr", MeanPool(), (0.5,) * 3, (0.2,) * 3, 4, band_names=("blue", "green", "red"))
    with pytest.raises(BandMismatchError) as info:
        extract_features(spec, dataset, progress=False)
    message = str(info.value)
    assert "['red', 'green', 'blue']" in message and "['blue', 'green', 'red']" in message
    assert "\n" not in message
    assert dataset.calls == []  # raised before any image was read


def test_band_count_mismatch_against_mean_length():
    dataset = _constant_rgb([(1, 2, 3)])
    spec = EncoderSpec("rgbn", MeanPool(), (0.5,) * 4, (0.2,) * 4, 4)
    with pytest.raises(BandMismatchError, match="3 bands.*expects 4"):
        extract_features(spec, dataset, progress=False)


def test_band_count_mismatch_detected_from_images_when_dataset_has_no_band_names():
    dataset = FakeSceneDataset(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), [0, 1], band_names=None)
    spec = EncoderSpec("gray", MeanPool(), (0.5,), (0.2,), 4)
    with pytest.raises(BandMismatchError, match="3 bands.*expects 1"):
        extract_features(spec, dataset, progress=False)


class _ModeRecorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        self.seen_training: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen_training.append(self.training)
        return self.bn(x).mean(dim=(2, 3))


@pytest.mark.parametrize("start_training", [True, False])
def test_encoder_runs_in_eval_mode_and_mode_is_restored(start_training):
    encoder = _ModeRecorder().train(start_training)
    running_mean = encoder.bn.running_mean.clone()
    spec = EncoderSpec("bn", encoder, (0.5,) * 3, (0.2,) * 3, 4)
    extract_features(spec, _constant_rgb([(200, 10, 10), (5, 90, 250)]), progress=False)
    assert encoder.seen_training == [False]
    assert encoder.training is start_training and encoder.bn.training is start_training
    torch.testing.assert_close(encoder.bn.running_mean, running_mean)  # eval mode: BN statistics untouched


def test_mode_restored_when_encoder_raises():
    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    encoder = Boom().train()
    with pytest.raises(RuntimeError, match="boom"):
        extract_features(EncoderSpec("x", encoder, (0.5,) * 3, (0.2,) * 3, 4), _constant_rgb([(1, 1, 1)]))
    assert encoder.training


def test_encoder_must_return_pooled_features():
    spec = EncoderSpec("map", nn.Identity(), (0.5,) * 3, (0.2,) * 3, 4)
    with pytest.raises(ConfigError, match=r"\(B, D\)"):
        extract_features(spec, _constant_rgb([(1, 2, 3)]), progress=False)


def test_features_are_computed_without_autograd():
    spec = EncoderSpec("lin", nn.Sequential(MeanPool(), nn.Linear(3, 2)), (0.5,) * 3, (0.2,) * 3, 4)
    features, _ = extract_features(spec, _constant_rgb([(1, 2, 3)]), progress=False)
    assert features.shape == (1, 2) and features.flags.writeable


def test_empty_dataset_is_a_data_error():
    empty = FakeSceneDataset(torch.zeros(0, 3, 4, 4, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64))
    with pytest.raises(DataError):
        extract_features(EncoderSpec("p", MeanPool(), (0.5,) * 3, (0.2,) * 3, 4), empty, progress=False)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mean": (0.5, 0.5), "std": (0.2,)},
        {"std": (0.2, 0.0, 0.2)},
        {"image_size": 0},
        {"image_size": 3.5},
        {"band_names": ("red", "green")},
    ],
)
def test_encoder_spec_validation(kwargs):
    base = {"name": "m", "encoder": MeanPool(), "mean": (0.5,) * 3, "std": (0.2,) * 3, "image_size": 4}
    with pytest.raises(ConfigError):
        EncoderSpec(**{**base, **kwargs})


def test_non_finite_weights_are_refused_naming_the_model_and_the_parameter():
    linear = nn.Linear(3, 2)
    with torch.no_grad():
        linear.weight[0, 1] = float("nan")
    spec = EncoderSpec("diverged", nn.Sequential(MeanPool(), linear), (0.5,) * 3, (0.2,) * 3, 4)
    with pytest.raises(DataError, match=r"encoder 'diverged': its weights are not finite \(1.weight: 1 of 6 values"):
        extract_features(spec, _constant_rgb([(1, 2, 3)]), progress=False)


class _InfForBright(nn.Module):
    def forward(self, x):
        pooled = x.mean(dim=(2, 3))
        return torch.where(pooled > 0, torch.full_like(pooled, float("inf")), pooled)


def test_non_finite_features_are_refused_naming_the_model_and_the_samples():
    spec = EncoderSpec("overflow", _InfForBright(), (0.5,) * 3, (0.2,) * 3, 4)
    dataset = _constant_rgb([(1, 2, 3), (250, 250, 250), (1, 1, 1), (255, 255, 255)])
    with pytest.raises(DataError, match=r"encoder 'overflow' gives non-finite features for 2 of 4 images in the batch "
                                        r"from sample 0 \(first: sample 1\)"):
        extract_features(spec, dataset, progress=False)
