"""rspretrain prepare: what is written (original bytes, labels, manifest), bad input, and resuming after a kill."""

import json
from pathlib import Path

import litdata
import numpy as np
import pytest
from PIL import Image

from rspretrain.core.errors import DataError
from rspretrain.data.shards.manifest import read_manifest
from rspretrain.data.shards.prepare import prepare
from tests.conftest import write_jpegs
from tests.data.shards.conftest import kill_when_chunks_exist


def test_records_hold_the_original_bytes_labels_and_names(prepared, jpeg_folder):
    manifest = read_manifest(prepared)
    assert manifest.complete and manifest.count == 36 and manifest.classes == ["farm", "forest", "town"]
    assert manifest.class_counts == {"farm": 12, "forest": 12, "town": 12} and manifest.skipped == []
    files = sorted(jpeg_folder.rglob("*.jpg"))
    assert manifest.source_bytes == sum(p.stat().st_size for p in files)
    # original bytes: shards are the size of the JPEGs plus a small per-record overhead
    assert manifest.source_bytes <= manifest.shard_bytes < manifest.source_bytes * 1.1
    dataset = litdata.StreamingDataset(str(prepared))
    records = [dataset[i] for i in range(len(dataset))]
    assert sorted(r["index"] for r in records) == list(range(36))
    for record in records:
        path = Path(bytes(record["name"]).decode())
        assert bytes(record["image"]) == path.read_bytes()
        assert manifest.classes[record["label"]] == path.parent.name


def test_the_manifest_carries_band_statistics_and_sizes_so_training_needs_no_pass(prepared, jpeg_folder):
    manifest = read_manifest(prepared)
    pixels = np.concatenate([np.asarray(Image.open(p).convert("RGB")).reshape(-1, 3) / 255.0
                             for p in sorted(jpeg_folder.rglob("*.jpg"))])
    # images up to 160 px are decoded whole for the sample; every image is in it (36 < 2000)
    assert np.allclose(manifest.mean, pixels.mean(0), atol=1e-6)
    assert np.allclose(manifest.std, pixels.std(0), atol=1e-6)
    assert manifest.stats_images == 36 and manifest.band_names == ["red", "green", "blue"]
    assert manifest.value_scale == 255.0 and manifest.image_sizes["sampled"] == 36


def test_a_corrupt_image_is_named_or_skipped_and_counted(tmp_path):
    source = tmp_path / "src"
    write_jpegs(source, per_class=3)
    bad = source / "forest" / "broken.jpg"
    bad.write_bytes((source / "farm" / "farm_000.jpg").read_bytes()[:200])
    with pytest.raises(DataError, match=r"1 image\(s\) of folder:.* cannot be read: .*broken.jpg: not a readable image"):
        prepare(f"folder:{source}", tmp_path / "a", workers=2, progress=False)
    with pytest.raises(DataError, match="half-written"):
        read_manifest(tmp_path / "a")  # the failed run left its manifest incomplete
    manifest = prepare(f"folder:{source}", tmp_path / "a", workers=2, skip_corrupt=True, progress=False)
    assert manifest.count == 9 and manifest.skipped == [str(bad)]
    assert manifest.class_counts == {"farm": 3, "forest": 3, "town": 3}


def test_an_image_above_the_pixel_limit_is_an_error_or_skipped(tmp_path):
    source = tmp_path / "src"
    write_jpegs(source, classes=("a",), per_class=2)
    Image.new("RGB", (400, 300)).save(source / "a" / "huge.jpg")
    with pytest.raises(DataError, match="huge.jpg: 400x300 px is above max_image_pixels=50000"):
        prepare(f"unlabeled:{source}", tmp_path / "a", workers=1, max_image_pixels=50_000, progress=False)
    manifest = prepare(f"unlabeled:{source}", tmp_path / "b", workers=1, max_image_pixels=50_000,
                       skip_corrupt=True, progress=False)
    assert manifest.count == 2 and manifest.classes is None and len(manifest.skipped) == 1


def test_output_folders_are_never_clobbered(prepared, jpeg_folder, tmp_path):
    again = prepare(f"folder:{jpeg_folder}", prepared, workers=2, chunk_bytes="20KB", progress=False)
    assert again.count == 36  # the same source: already prepared, nothing rewritten
    with pytest.raises(DataError, match="holds a set prepared from folder:"):
        prepare(f"unlabeled:{jpeg_folder}", prepared, workers=1, progress=False)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not empty and not a prepared set"):
        prepare(f"folder:{jpeg_folder}", other, workers=1, progress=False)
    assert (other / "notes.txt").read_text() == "keep me"


def test_named_sets_are_prepared_from_their_archives(data_root, tmp_path):
    manifest = prepare("eurosat", tmp_path / "eurosat", root=data_root, split="train", max_per_class=3, workers=1,
                       progress=False)
    assert manifest.count == 30 and len(manifest.classes) == 10
    assert set(manifest.class_counts.values()) == {3}
    assert manifest.image_sizes["smallest"] == manifest.image_sizes["largest"] == [64, 64]


def test_a_killed_preparation_resumes_and_writes_every_image_once(tmp_path):
    source = tmp_path / "src"
    write_jpegs(source, classes=("a", "b"), per_class=150)
    out = tmp_path / "out"
    script = (f"from rspretrain.data.shards.prepare import prepare\n"
              f"prepare('folder:{source}', '{out}', workers=2, chunk_bytes='4KB', progress=False)\n")
    kill_when_chunks_exist(script, out, 6)
    with pytest.raises(DataError, match="half-written"):
        read_manifest(out)
    written_before = len(list(out.glob("chunk-*.bin")))
    assert 0 < written_before
    manifest = prepare(f"folder:{source}", out, workers=2, chunk_bytes="4KB", progress=False)
    assert manifest.complete and manifest.count == 300
    dataset = litdata.StreamingDataset(str(out))
    assert sorted(dataset[i]["index"] for i in range(len(dataset))) == list(range(300))
    assert json.loads((out / "rspretrain.json").read_text())["complete"] is True


def test_records_written_twice_by_a_resumed_writer_are_dropped(tmp_path):
    from rspretrain.data.shards.writing import drop_duplicates

    out = tmp_path / "set"
    litdata.optimize(fn=_duplicated, inputs=list(range(12)), output_dir=str(out), num_workers=1, verbose=False,
                     chunk_bytes="1KB")
    assert drop_duplicates(out, workers=2, chunk_bytes="1KB") == 10
    dataset = litdata.StreamingDataset(str(out))
    records = sorted((dataset[i]["index"], bytes(dataset[i]["image"])) for i in range(len(dataset)))
    assert records == [(i, bytes([i]) * 100) for i in range(10)]
    assert not (tmp_path / "set.deduplicated").exists()


def _duplicated(position: int) -> dict:
    index = position if position < 10 else position - 10  # positions 10 and 11 repeat images 0 and 1
    return {"index": index, "name": f"{index}".encode(), "image": bytes([index]) * 100}
