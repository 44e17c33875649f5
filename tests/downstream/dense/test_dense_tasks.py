"""One-epoch runs of each dense task on the real data, band checks, sources and the CLI."""

import json
import shutil

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.windows import Window

from rspretrain.core.errors import BandMismatchError, ConfigError, DataError
from rspretrain.downstream.dense.change_detection import change_schedule, evaluate_change_detection
from rspretrain.downstream.dense.detection import (
    detection_schedule,
    dihedral_boxes,
    evaluate_detection,
    random_box_crop,
)
from rspretrain.downstream.dense.segmentation import evaluate_segmentation, segmentation_schedule
from rspretrain.downstream.frozen.features import EncoderSpec
from rspretrain.downstream.sources import encoder_specs, random_init_spec
from rspretrain.nn.backbones import Backbone


def _random(name="random-init"):
    spec = random_init_spec("resnet18", 3, 64, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), ("red", "green", "blue"))
    spec.name = name
    return spec


def _geotiff_crop(data_root, path, window=None):
    window = window or Window(100, 100, 90, 70)
    with rasterio.open(data_root / "geotiff_samples" / "rasterio_RGB.byte.tif") as src:
        profile = src.profile | {"height": window.height, "width": window.width,
                                 "transform": src.window_transform(window)}
        data = src.read(window=window)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return profile


def test_segmentation_one_epoch_on_dubai_with_overlay_and_raster(data_root, tmp_path):
    schedule = segmentation_schedule(epochs=1, crop_size=64, crops_per_image=1, batch_size=4, decoder_channels=16,
                                     progress=False)
    raster = tmp_path / "scene.tif"
    profile = _geotiff_crop(data_root, raster)
    results = evaluate_segmentation([_random()], data_root / "dubai_aerial_seg", tmp_path / "out", schedule,
                                    scale=0.12, n_examples=2, predict_rasters=[raster], n_resamples=100)
    (result,) = results
    m = result.metrics
    assert result.n_train == 36 and result.n_test == 9 and result.extra["steps_per_epoch"] == 9
    assert 0 <= m["miou"] <= 1 and m["miou_ci"][0] <= m["miou"] <= m["miou_ci"][1]
    assert list(m["per_class_iou"]) == ["Building", "Land (unpaved area)", "Road", "Vegetation", "Water", "Unlabeled"]
    assert np.asarray(m["confusion_matrix"]).sum() > 0
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["meta"]["dataset"] == "dubai" and saved["results"][0]["model"] == "random-init"
    with Image.open(tmp_path / "out" / "segmentation.png") as picture:
        assert picture.size[0] > 400 and picture.size[1] > 300
    assert (tmp_path / "out" / "scores.png").is_file()
    with rasterio.open(tmp_path / "out" / "scene_segmentation.tif") as dst:
        assert dst.crs == profile["crs"] and dst.transform == profile["transform"]
        labels = dst.read(1)
    assert labels.shape == (70, 90) and set(np.unique(labels).tolist()) <= set(range(6)) | {255}


def test_change_detection_one_epoch_on_levir(data_root, tmp_path):
    schedule = change_schedule(epochs=1, crop_size=64, crops_per_image=2, batch_size=4, decoder_channels=16,
                               progress=False)
    (result,) = evaluate_change_detection([_random()], data_root / "levir_cd_samples", tmp_path, schedule, scale=0.25,
                                          n_examples=2, n_resamples=100)
    m = result.metrics
    assert result.n_train == 4 and result.n_test == 7
    assert all(0 <= m[k] <= 1 for k in ("f1", "iou", "precision", "recall"))
    counts = m["counts"]
    assert counts["tp"] + counts["fp"] + counts["fn"] + counts["tn"] == 7 * 64 * 64
    assert counts["tp"] + counts["fn"] > 0.1 * 7 * 64 * 64  # the test crops hold ~18 % change
    assert (tmp_path / "change.png").is_file() and (tmp_path / "metrics.json").is_file()


def test_detection_one_epoch_on_neon(data_root, tmp_path):
    schedule = detection_schedule(epochs=1, crop_size=128, crops_per_image=1, batch_size=2, decoder_channels=16,
                                  progress=False)
    (result,) = evaluate_detection([_random()], data_root / "deepforest_neon_trees", tmp_path, schedule, n_examples=2)
    m = result.metrics
    assert result.n_train == 3 and result.n_test == 3 and result.extra["steps"] == 2
    assert 0 <= m["ap"] <= m["ap50"] <= 1 and set(m["per_class_ap"]) <= {"Tree"}
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["meta"]["test_boxes"] > 10 and saved["meta"]["classes"] == ["Tree"]
    assert (tmp_path / "detections.png").is_file()


def test_detection_refuses_a_fixed_size_transformer_encoder_before_training(data_root, tmp_path):
    vit = random_init_spec("vit_small_patch16_224", 3, 64, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25),
                           ("red", "green", "blue"))
    with pytest.raises(ConfigError, match="random-init is a vit_small_patch16_224 encoder built for one input size"):
        evaluate_detection([vit], data_root / "deepforest_neon_trees", tmp_path, detection_schedule(progress=False))
    assert not (tmp_path / "metrics.json").exists()


def test_random_box_crop_moves_boxes_with_the_pixels():
    """Paint each box into a mask, crop + rotate + flip both: the boxes stay the painted regions' bounds."""
    rng = np.random.default_rng(3)
    image = np.zeros((1, 60, 80), np.uint8)
    boxes = np.array([[10, 5, 30, 20], [50, 30, 70, 55]], np.float32)
    for v, (x0, y0, x1, y1) in enumerate(boxes.astype(int), start=1):
        image[0, y0:y1, x0:x1] = v
    for _ in range(20):
        crop, out_boxes, labels = random_box_crop(image, boxes, np.array([0, 1]), 40, rng)
        for box, label in zip(out_boxes, labels):
            ys, xs = np.nonzero(crop[0] == label + 1)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert dihedral_boxes(np.array([[0, 0, 2, 1]]), 4, 6, 1, False).tolist() == [[0, 4, 1, 6]]


def test_band_metadata_of_an_exported_backbone_is_checked_against_the_data(data_root, tmp_path):
    from rspretrain.pretrain.export import export_backbone
    from rspretrain.pretrain.methods import create

    method = create("moco", backbone="resnet18", in_chans=4, band_names=("blue", "green", "red", "nir"),
                    image_size=32, queue_size=16)
    path = export_backbone(method, tmp_path / "bb.safetensors")
    specs = encoder_specs(str(path))
    assert specs[0].band_names == ("blue", "green", "red", "nir") and specs[0].value_scale == 255.0
    with pytest.raises(BandMismatchError, match="data has 3 bands but the model expects 4"):
        evaluate_segmentation(specs, data_root / "dubai_aerial_seg", scale=0.1)
    bgr = EncoderSpec("bgr", Backbone("resnet18"), (0.5,) * 3, (0.25,) * 3, 64, ("blue", "green", "red"))
    with pytest.raises(BandMismatchError, match="band order"):
        evaluate_change_detection([bgr], data_root / "levir_cd_samples")
    with pytest.raises(BandMismatchError, match="band order"):
        evaluate_detection([bgr], data_root / "deepforest_neon_trees")


def test_timm_source_uses_the_pretrained_config(monkeypatch):
    import timm

    calls = []
    real_create = timm.create_model

    def fake_create(arch, pretrained=False, **kwargs):
        calls.append((arch, pretrained))
        model = real_create(arch, pretrained=False, **kwargs)
        model.pretrained_cfg = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "input_size": (3, 96, 96)}
        return model

    monkeypatch.setattr(timm, "create_model", fake_create)
    spec = encoder_specs("timm:resnet18", with_random_init=False)[0]
    assert calls[-1] == ("resnet18", True)
    assert spec.name == "timm-resnet18" and spec.mean == (0.485, 0.456, 0.406) and spec.image_size == 96
    assert spec.band_names == ("red", "green", "blue")

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'\nsecond line")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(DataError, match=r"timm:resnet18: could not load .* or use random:resnet18") as info:
        encoder_specs("timm:resnet18")
    assert "\n" not in str(info.value)


def _small_dubai_folder(data_root, root):
    """Four 64 px image/mask pairs cut from the real Dubai tiles, in the flat image/mask layout."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    shutil.copy(data_root / "dubai_aerial_seg" / "class_colors.csv", root / "class_colors.csv")
    for i, tile in enumerate(["Tile 1", "Tile 2", "Tile 3", "Tile 5"]):
        image = Image.open(data_root / "dubai_aerial_seg" / tile / "images" / "image_part_002.jpg").convert("RGB")
        mask = Image.open(data_root / "dubai_aerial_seg" / tile / "masks" / "image_part_002.png").convert("RGB")
        box = (100, 100, 164, 164)
        image.crop(box).save(root / "images" / f"p{i}.png")
        mask.crop(box).save(root / "masks" / f"p{i}.png")


def test_cli_evaluate_segmentation_writes_metrics_picture_and_raster(data_root, tmp_path, capsys):
    from rspretrain.apps.cli import main

    _small_dubai_folder(data_root, tmp_path / "seg")
    raster = tmp_path / "scene.tif"
    _geotiff_crop(data_root, raster, Window(200, 200, 40, 30))
    torch.manual_seed(0)
    code = main(["evaluate", "random:resnet18", "--task", "segmentation", "--data", str(tmp_path / "seg"),
                 "--epochs", "1", "--image-size", "32", "--batch-size", "4", "--freeze-backbone",
                 "--predict-raster", str(raster), "--input-statistics", "train", "--out", str(tmp_path / "out")])
    assert code == 0
    out = capsys.readouterr().out
    assert "| model | seg mIoU |" in out and "random-init" in out
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["meta"]["schedule"]["freeze_backbone"] is True and saved["meta"]["n_test"] == 1
    # standardised with the training images' own statistics, not random:resnet18's 0.5 / 0.25
    assert saved["meta"]["schedule"]["input_statistics"] == "train"
    (result,) = saved["results"]
    assert result["extra"]["input_statistics"] == "train" and all(m != 0.5 for m in result["extra"]["input_mean"])
    assert (tmp_path / "out" / "segmentation.png").is_file()
    with rasterio.open(tmp_path / "out" / "scene_segmentation.tif") as dst:
        assert (dst.height, dst.width) == (30, 40)
    code = main(["evaluate", "random:resnet18", "--task", "detection", "--predict-raster", str(raster),
                 "--out", str(tmp_path / "det")])
    assert code == 2 and "--predict-raster is for segmentation" in capsys.readouterr().err


def _sen1floods_folder(data_root, root):
    """The real 13-band Sentinel-2 chip and its hand-labelled water mask, cut into four 256 px GeoTIFF pairs."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("not water\nwater\n")
    sample = data_root / "sen1floods11_sample"
    with rasterio.open(sample / "Spain_7370579_S2Hand.tif") as src, \
            rasterio.open(sample / "Spain_7370579_LabelHand.tif") as lab:
        bands = src.descriptions
        for i, (row, col) in enumerate([(0, 0), (0, 256), (256, 0), (256, 256)]):
            window = Window(col, row, 256, 256)
            profile = src.profile | {"height": 256, "width": 256, "transform": src.window_transform(window)}
            with rasterio.open(root / "images" / f"t{i}.tif", "w", **profile) as dst:
                dst.write(src.read(window=window))
                dst.descriptions = bands
            label = lab.read(1, window=window)
            mask = np.where(label < 0, 255, label).astype(np.uint8)  # -1 = no data -> ignored
            with rasterio.open(root / "masks" / f"t{i}.tif", "w", **(profile | {"count": 1, "dtype": "uint8",
                                                                                 "nodata": None})) as dst:
                dst.write(mask[None])
    return tuple(bands)


def test_multispectral_backbone_segments_13_band_sentinel2(data_root, tmp_path):
    bands = _sen1floods_folder(data_root, tmp_path / "s2")
    spec = EncoderSpec("s2-13band", Backbone("resnet18", in_chans=13), (0.1,) * 13, (0.05,) * 13, 64, bands, 10000.0)
    schedule = segmentation_schedule(epochs=1, crop_size=64, crops_per_image=2, batch_size=4, decoder_channels=16,
                                     progress=False)
    (result,) = evaluate_segmentation([spec], tmp_path / "s2", tmp_path / "out", schedule, n_resamples=50)
    assert result.n_train == 3 and result.n_test == 1 and result.extra["value_scale"] == 10000.0
    assert set(result.metrics["per_class_iou"]) == {"not water", "water"}
    assert (tmp_path / "out" / "segmentation.png").is_file()
    swapped = EncoderSpec("swapped", Backbone("resnet18", in_chans=13), (0.1,) * 13, (0.05,) * 13, 64,
                          (bands[1], bands[0], *bands[2:]), 10000.0)
    with pytest.raises(BandMismatchError, match="band order"):
        evaluate_segmentation([swapped], tmp_path / "s2", schedule=schedule)
