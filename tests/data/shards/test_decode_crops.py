"""Decode-time crops: RandomResizedCrop's law on the stored image, reduced JPEG decoding, the pixel limit."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import RandomResizedCrop

from rspretrain.core.errors import DataError
from rspretrain.data.shards.decode_crops import DecodePlan, decode_crops, sample_crop_box


def _jpeg(width: int, height: int, seed: int = 0, quality: int = 95) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (height // 16 + 1, width // 16 + 1, 3)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def test_boxes_follow_random_resized_crop_law():
    rng = np.random.default_rng(0)
    boxes = np.array([sample_crop_box(rng, 300, 200, (0.2, 1.0), (3 / 4, 4 / 3)) for _ in range(2000)])
    x0, y0, w, h = boxes.T
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= 300).all() and (y0 + h <= 200).all()
    area, ratio = w * h / 60000, w / h
    assert 0.19 <= area.min() < 0.25 and area.max() <= 1.0 and 0.74 <= ratio.min() and ratio.max() <= 1.35
    # The same law as torchvision's RandomResizedCrop (large draws often do not fit 200 px, so the first fitting
    # draw is biased small -- in both).
    torch.manual_seed(0)
    reference = np.array([RandomResizedCrop.get_params(torch.empty(3, 200, 300), [0.2, 1.0], [3 / 4, 4 / 3])
                          for _ in range(2000)])
    assert abs(np.median(area) - np.median(reference[:, 2] * reference[:, 3] / 60000)) < 0.03


def test_a_panorama_without_a_fitting_draw_gets_torchvisions_centre_crop_not_the_stretched_image():
    rng = np.random.default_rng(0)
    # 10:1 at scale >= 0.2: no box of ratio <= 4/3 fits, so every draw falls back to the centre 133 x 100 crop.
    assert {sample_crop_box(rng, 1000, 100, (0.2, 1.0), (3 / 4, 4 / 3)) for _ in range(50)} == {(433, 0, 133, 100)}


def test_crops_are_seeded_by_the_generator_and_keep_their_boxes():
    data = _jpeg(300, 200)
    plan = DecodePlan(32, ((0.2, 1.0), (0.5, 1.0)))
    a, boxes_a = decode_crops(data, plan, np.random.default_rng([1, 2, 3]))
    b, boxes_b = decode_crops(data, plan, np.random.default_rng([1, 2, 3]))
    c, _ = decode_crops(data, plan, np.random.default_rng([1, 2, 4]))
    assert a.shape == (2, 3, 32, 32) and a.dtype == np.uint8 and boxes_a.shape == (2, 4)
    assert np.array_equal(a, b) and np.array_equal(boxes_a, boxes_b) and not np.array_equal(a, c)
    assert boxes_a[1, 2] * boxes_a[1, 3] >= 0.49 * 300 * 200


def test_reduced_jpeg_decoding_matches_the_full_decode_crop():
    data = _jpeg(2048, 1536, seed=3)
    plan = DecodePlan(64, ((0.3, 1.0),))
    crops, boxes = decode_crops(data, plan, np.random.default_rng(0))
    x0, y0, w, h = boxes[0]
    full = Image.open(io.BytesIO(data)).convert("RGB")
    reference = np.asarray(full.resize((64, 64), Image.Resampling.BILINEAR, box=(x0, y0, x0 + w, y0 + h)))
    difference = np.abs(crops[0].transpose(1, 2, 0).astype(int) - reference.astype(int))
    assert difference.mean() < 2.0  # the DCT-scaled decode of a smooth photo: the same picture


def test_without_crop_scales_the_whole_image_is_resized():
    data = _jpeg(120, 80)
    images, boxes = decode_crops(data, DecodePlan(16), np.random.default_rng(0))
    assert images.shape == (1, 3, 16, 16) and boxes.tolist() == [[0, 0, 120, 80]]


def test_the_pixel_limit_is_a_clear_error_naming_the_file_and_the_key():
    data = _jpeg(400, 300)
    with pytest.raises(DataError, match=r"big\.jpg: 400x300 px is above max_image_pixels=100000"):
        decode_crops(data, DecodePlan(16, max_image_pixels=100_000), np.random.default_rng(0), "big.jpg")
    decode_crops(data, DecodePlan(16, max_image_pixels=120_000), np.random.default_rng(0), "big.jpg")


def test_images_above_pillows_own_limit_are_read_within_ours(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow would refuse a 400 x 300 image as a bomb
    images, _ = decode_crops(_jpeg(400, 300), DecodePlan(16), np.random.default_rng(0), "a.jpg")
    assert images.shape == (1, 3, 16, 16) and Image.MAX_IMAGE_PIXELS == 1000


@pytest.mark.parametrize("data, reason", [(b"", "empty image record"), (b"not an image", "not a recognised image"),
                                          (_jpeg(640, 480)[:6000], "cannot decode")])
def test_bad_bytes_name_the_record(data, reason):
    with pytest.raises(DataError, match=f"rec 7: {reason}"):
        decode_crops(data, DecodePlan(16), np.random.default_rng(0), "rec 7")


def test_sixteen_bit_images_are_refused_not_clipped():
    buffer = io.BytesIO()
    Image.fromarray(np.full((20, 20), 40000, dtype=np.uint16)).save(buffer, "PNG")
    with pytest.raises(DataError, match="more than 8 bits"):
        decode_crops(buffer.getvalue(), DecodePlan(16), np.random.default_rng(0), "deep.png")
