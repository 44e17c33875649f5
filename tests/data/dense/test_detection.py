import json

import numpy as np
import pytest
from PIL import Image

from rspretrain.core.errors import DataError
from rspretrain.data.dense.detection import (
    DetectionFolder,
    NeonTreeCrowns,
    crop_boxes,
    read_boxes_csv,
    read_coco_json,
    read_voc_xml,
)

SJER = "2018_SJER_3_252000_4107000_image_477"


def test_sjer_csv_columns_are_read_by_name(data_root):
    """The SJER truth file orders its columns xmin,xmax,ymin,ymax; the first row is 1,82,103,235."""
    boxes = read_boxes_csv(data_root / "deepforest_neon_trees" / f"{SJER}_truth.csv")
    sjer = boxes[f"{SJER}.tif"]
    assert len(sjer.labels) == 7
    # xmin=1, ymin=103, xmax=82, ymax=235 -- a positional reader would give (1, 82, 103, 235).
    assert sjer.xyxy[0].tolist() == [1.0, 103.0, 82.0, 235.0]
    assert (sjer.xyxy[:, 2] > sjer.xyxy[:, 0]).all() and (sjer.xyxy[:, 3] > sjer.xyxy[:, 1]).all()


def test_osbs_csv_and_voc_xml_hold_the_same_61_boxes(data_root):
    root = data_root / "deepforest_neon_trees"
    from_csv = read_boxes_csv(root / "OSBS_029.csv")["OSBS_029.tif"]
    name, from_xml = read_voc_xml(root / "OSBS_029.xml")
    assert name == "OSBS_029.tif" and len(from_xml.labels) == 61
    assert from_csv.same_as(from_xml)
    assert from_xml.xyxy[0].tolist() == [203.0, 67.0, 227.0, 90.0]


def test_soap_voc_labels(data_root):
    name, boxes = read_voc_xml(data_root / "deepforest_neon_trees" / "SOAP_061.xml")
    assert name == "SOAP_061.png"
    assert boxes.labels.count("Dead") == 28 and boxes.labels.count("Alive") == 9


def test_neon_region_split_keeps_every_box_once_or_clipped(data_root):
    train = NeonTreeCrowns(data_root / "deepforest_neon_trees", "train")
    test = NeonTreeCrowns(data_root / "deepforest_neon_trees", "test")
    assert train.classes == ["Tree"] and len(train) == len(test) == 3
    assert [im.shape for im in train.images] == [(3, 280, 400)] * 3
    assert [im.shape for im in test.images] == [(3, 120, 400)] * 3
    # 105 boxes in all; a box cut by row 280 goes to the side holding at least half of it (to both if exactly half).
    assert 105 <= train.num_boxes + test.num_boxes <= 110 and test.num_boxes > 10
    for image, boxes in zip(test.images, test.boxes):
        assert (boxes[:, [0, 2]] <= image.shape[2]).all() and (boxes[:, [1, 3]] <= image.shape[1]).all()
    generic = DetectionFolder(data_root / "deepforest_neon_trees", "test")
    assert generic.classes == ["0", "Alive", "Dead", "Tree"] and generic.split_mode == "region"


def test_crop_boxes_keeps_half_visible_boxes_clipped():
    boxes = np.array([[0, 0, 10, 10], [8, 0, 12, 10], [5, 5, 30, 30], [50, 50, 60, 60]], np.float32)
    kept_boxes, kept = crop_boxes(boxes, (0, 0, 20, 10))  # rows 0..20, cols 0..10
    assert kept.tolist() == [0, 1]  # box 2: 5x15 of 25x25 visible (12 %); box 3 outside
    assert kept_boxes.tolist() == [[0, 0, 10, 10], [8, 0, 10, 10]]


def test_coco_json_and_voc_folder(tmp_path):
    images = tmp_path / "coco" / "images"
    images.mkdir(parents=True)
    for i in range(6):
        Image.fromarray(np.zeros((32, 40, 3), np.uint8)).save(images / f"im{i}.png")
    coco = {
        "images": [{"id": i, "file_name": f"im{i}.png", "width": 40, "height": 32} for i in range(6)],
        "categories": [{"id": 7, "name": "plane"}, {"id": 3, "name": "ship"}],
        "annotations": [{"id": i, "image_id": i, "category_id": 7 if i % 2 else 3, "bbox": [2, 3, 10, 5]}
                        for i in range(6)],
    }
    (tmp_path / "coco" / "train.json").write_text(json.dumps(coco))
    boxes, categories = read_coco_json(tmp_path / "coco" / "train.json")
    assert categories == ["ship", "plane"]  # category id order
    assert boxes["im1.png"].xyxy.tolist() == [[2, 3, 12, 8]] and boxes["im1.png"].labels == ["plane"]
    train = DetectionFolder(tmp_path / "coco" / "train.json", "train")
    test = DetectionFolder(tmp_path / "coco" / "train.json", "test")
    assert train.split_mode == "image" and len(train) + len(test) == 6 and train.classes == ["ship", "plane"]

    voc = tmp_path / "voc"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "JPEGImages").mkdir()
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(voc / "JPEGImages" / f"v{i}.jpg")
        (voc / "Annotations" / f"v{i}.xml").write_text(
            f"<annotation><filename>v{i}.jpg</filename><object><name>car</name><bndbox><xmin>1</xmin>"
            "<ymin>2</ymin><xmax>9</xmax><ymax>8</ymax></bndbox></object></annotation>")
    (voc / "ImageSets" / "Main" / "train.txt").write_text("v0\nv1\n")
    (voc / "ImageSets" / "Main" / "test.txt").write_text("v2\n")
    train = DetectionFolder(voc, "train")
    assert train.split_mode == "published" and train.names == ["v0", "v1"] and train.boxes[0].tolist() == [[1, 2, 9, 8]]


def test_bad_annotations_name_the_file(tmp_path):
    (tmp_path / "a.csv").write_text("image_path,xmin,xmax,ymin\nx.png,1,2,3\n")
    with pytest.raises(DataError, match="a.csv: missing column"):
        read_boxes_csv(tmp_path / "a.csv")
    (tmp_path / "a.csv").write_text("image_path,xmin,ymin,xmax,ymax\nx.png,5,1,2,9\n")
    with pytest.raises(DataError, match=r"a.csv:2: box .* empty or inverted"):
        read_boxes_csv(tmp_path / "a.csv")
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "x.png")
    (tmp_path / "a.csv").write_text("image_path,xmin,ymin,xmax,ymax\nx.png,1,1,4,4\n")
    (tmp_path / "x.xml").write_text("<annotation><filename>x.png</filename><object><name>t</name><bndbox><xmin>1"
                                    "</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>")
    with pytest.raises(DataError, match="x.xml: boxes for x.png disagree with .*a.csv"):
        DetectionFolder(tmp_path, "train")
