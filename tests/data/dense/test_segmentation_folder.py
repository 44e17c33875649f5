import numpy as np
import pytest
from PIL import Image

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.data.dense.segmentation_folder import (
    DubaiAerialSegmentation,
    SegmentationFolder,
    colours_to_ids,
    read_class_colors,
)

DUBAI_CLASSES = ["Building", "Land (unpaved area)", "Road", "Vegetation", "Water", "Unlabeled"]


def test_class_colors_of_the_real_dubai_table(data_root):
    names, colours = read_class_colors(data_root / "dubai_aerial_seg" / "class_colors.csv")
    assert names == DUBAI_CLASSES
    assert colours[0].tolist() == [0x3C, 0x10, 0x98]  # Building #3C1098
    assert colours[4].tolist() == [0xE2, 0xA9, 0x29]  # Water #E2A929


def test_colour_mask_maps_to_ids_and_names_unknown_colours():
    colours = np.array([[60, 16, 152], [132, 41, 246]], np.uint8)
    mask = np.array([[[60, 16, 152], [132, 41, 246]], [[0, 0, 0], [60, 16, 152]]], np.uint8)
    ids = colours_to_ids(mask, colours, np.array([[0, 0, 0]], np.uint8), 255)
    assert ids.tolist() == [[0, 1], [255, 0]]
    with pytest.raises(DataError, match=r"#000000 \(1 px\).*not in the class-colour table"):
        colours_to_ids(mask, colours, None, 255, "m.png")


def test_real_dubai_masks_use_the_csv_colours_not_classes_json(data_root):
    """Every real mask pixel is a class_colors.csv colour or black; the shipped classes.json colours would fail."""
    test = DubaiAerialSegmentation(data_root / "dubai_aerial_seg", "test", scale=0.25)
    assert test.classes == DUBAI_CLASSES and test.num_classes == 6
    assert len(test) == 9 and all(name.startswith("Tile 6/") for name in test.names)
    counts = test.class_pixel_counts()
    assert counts[1] > 0 and counts[3] > 0 and counts[4] > 0  # land, vegetation, water all present in Tile 6
    assert test.band_names == ("red", "green", "blue") and test.value_scale == 255.0
    # The masks hold only class ids and the ignore index.
    values = np.unique(np.concatenate([m.ravel() for m in test.masks]))
    assert set(values.tolist()) <= set(range(6)) | {255}
    # classes.json's "Building" colour #D0021B occurs in no mask.
    mask = np.asarray(Image.open(data_root / "dubai_aerial_seg" / "Tile 1" / "masks" / "image_part_001.png")
                      .convert("RGB"))
    assert not (mask == [0xD0, 0x02, 0x1B]).all(axis=-1).any()


def test_dubai_split_is_by_tile_and_full_size_masks_match_images(data_root):
    train = DubaiAerialSegmentation(data_root / "dubai_aerial_seg", "train", scale=0.1)
    assert len(train) == 36 and not any(n.startswith("Tile 6/") for n in train.names)
    full = SegmentationFolder(data_root / "dubai_aerial_seg", "test", ignore_colors=("#000000",),
                              test_groups=["Tile 1"])
    assert full.images[0].shape == (3, 644, 797) and full.masks[0].shape == (644, 797)
    assert len(full) == 9 and full.test_groups == ("Tile 1",)


def _write_pair(root, name, image, mask):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / "images" / f"{name}.png")
    Image.fromarray(mask).save(root / "masks" / f"{name}.png")


def test_flat_id_mask_folder_splits_deterministically_and_infers_classes(tmp_path):
    rng = np.random.RandomState(0)
    for i in range(5):
        _write_pair(tmp_path, f"img{i}", rng.randint(0, 256, (8, 10, 3), np.uint8),
                    np.full((8, 10), i % 3, np.uint8))
    train = SegmentationFolder(tmp_path, "train", test_fraction=0.4, seed=0)
    test = SegmentationFolder(tmp_path, "test", test_fraction=0.4, seed=0)
    assert len(train) == 3 and len(test) == 2 and not set(train.names) & set(test.names)
    assert train.classes == ["class_0", "class_1", "class_2"]  # inferred from all masks, both splits
    assert train.layout == "flat"
    again = SegmentationFolder(tmp_path, "test", test_fraction=0.4, seed=0)
    assert again.names == test.names


def test_scale_resizes_masks_by_nearest_neighbour(tmp_path):
    mask = np.zeros((20, 20), np.uint8)
    mask[:, 10:] = 2
    for i in range(2):
        _write_pair(tmp_path, f"a{i}", np.zeros((20, 20, 3), np.uint8), mask)
    ds = SegmentationFolder(tmp_path, "train", classes=["a", "b", "c"], test_fraction=0.5, scale=0.5)
    assert ds.images[0].shape == (3, 10, 10)
    assert set(np.unique(ds.masks[0]).tolist()) == {0, 2}  # no interpolated label 1
    assert (ds.masks[0][:, :5] == 0).all() and (ds.masks[0][:, 5:] == 2).all()


def test_bad_inputs_name_the_file(tmp_path):
    _write_pair(tmp_path, "a", np.zeros((4, 4, 3), np.uint8), np.full((4, 4), 5, np.uint8))
    _write_pair(tmp_path, "b", np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="class id 5"):
        for split in ("train", "test"):  # whichever split holds a.png
            SegmentationFolder(tmp_path, split, classes=["x", "y"], test_fraction=0.5)
    Image.fromarray(np.zeros((3, 4), np.uint8)).save(tmp_path / "masks" / "b.png")
    with pytest.raises(DataError, match=r"b.png: mask is 3x4 px"):
        for split in ("train", "test"):
            SegmentationFolder(tmp_path, split, classes=["x", "y", "z", "u", "v", "w"], test_fraction=0.5)
    with pytest.raises(ConfigError, match="split 'val'"):
        SegmentationFolder(tmp_path, "val")
    (tmp_path / "masks" / "a.png").unlink()
    with pytest.raises(DataError, match="a.png: no mask"):
        SegmentationFolder(tmp_path, "train")
    with pytest.raises(DataError, match="no segmentation layout"):
        SegmentationFolder(tmp_path / "images", "train")
