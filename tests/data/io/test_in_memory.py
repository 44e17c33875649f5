"""InMemoryImageDataset, the shared decoder (rspretrain.data.io.decode) and the disk cache."""

from __future__ import annotations

import io
import logging
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from torch.utils.data import DataLoader

from rspretrain.core.errors import DataError
from rspretrain.data import InMemoryImageDataset, ZipMember, collate_batched
from rspretrain.data.io import cache, decode


def _dataset(n: int = 10, labelled: bool = True) -> InMemoryImageDataset:
    images = torch.randint(0, 256, (n, 3, 4, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = [i % 3 for i in range(n)] if labelled else None
    return InMemoryImageDataset(images, labels, classes=["a", "b", "c"] if labelled else None)


def test_getitem_and_getitems_agree():
    ds = _dataset()
    sample = ds[3]
    assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (3, 4, 5)
    assert sample["label"].dtype == torch.int64 and sample["label"].ndim == 0 and int(sample["label"]) == 0
    indices = [7, 0, 3, 3, -1]
    batch = ds.__getitems__(indices)
    assert batch["image"].shape == (5, 3, 4, 5) and batch["image"].dtype == torch.uint8
    assert torch.equal(batch["image"], torch.stack([ds[i]["image"] for i in indices]))
    assert torch.equal(batch["label"], torch.stack([ds[i]["label"] for i in indices]))
    assert batch["label"].dtype == torch.int64
    assert ds.band_names == ("red", "green", "blue") and ds.value_scale == 255.0


def test_samples_are_copies():
    ds = _dataset()
    before = ds.images[2].clone()
    ds[2]["image"].zero_()
    ds.__getitems__([2])["image"].zero_()
    assert torch.equal(ds.images[2], before)


def test_unlabelled_has_no_label_key():
    ds = _dataset(labelled=False)
    assert set(ds[0]) == {"image"} and set(ds.__getitems__([0, 1])) == {"image"}
    with pytest.raises(ValueError):
        ds.class_counts()


def test_index_errors():
    ds = _dataset(4)
    with pytest.raises(IndexError):
        ds[4]
    with pytest.raises(IndexError):
        ds.__getitems__([0, 4])
    assert len(list(iter(ds))) == 4  # the sequence protocol stops at IndexError


def test_subset_shares_storage():
    ds = _dataset(10)
    sub = ds.subset([9, 2, 5])
    assert sub.storage.data_ptr() == ds.storage.data_ptr()
    assert len(sub) == 3 and sub.files == [ds.files[9], ds.files[2], ds.files[5]]
    for i, j in enumerate([9, 2, 5]):
        assert torch.equal(sub[i]["image"], ds[j]["image"]) and int(sub[i]["label"]) == int(ds[j]["label"])
    subsub = sub.subset([2, 0])
    assert subsub.storage.data_ptr() == ds.storage.data_ptr()
    assert torch.equal(subsub.__getitems__([0, 1])["image"], ds.__getitems__([5, 9])["image"])
    assert torch.equal(sub.images, ds.images[[9, 2, 5]])
    assert sub.class_counts() == {"a": 1, "b": 0, "c": 2}  # labels i % 3 of rows 9, 2, 5


def test_class_counts_include_empty_classes():
    ds = InMemoryImageDataset(torch.zeros(5, 3, 2, 2, dtype=torch.uint8), [0, 0, 2, 2, 2], classes=["x", "y", "z"])
    assert ds.class_counts() == {"x": 2, "y": 0, "z": 3}


def test_constructor_validates():
    with pytest.raises(TypeError):
        InMemoryImageDataset(torch.zeros(2, 3, 4, 4))  # float, not uint8
    with pytest.raises(ValueError):
        InMemoryImageDataset(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), [0, 1, 2])
    with pytest.raises(ValueError):
        InMemoryImageDataset(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), [0, 5], classes=["a", "b"])


def test_dataloader_uses_batched_fetch():
    ds = _dataset(10)
    loader = DataLoader(ds, batch_size=4, shuffle=False, collate_fn=collate_batched)
    batches = list(loader)
    assert [len(b["image"]) for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b["image"] for b in batches]), ds.images)
    assert torch.equal(torch.cat([b["label"] for b in batches]), ds.labels)
    # collate_batched falls back to default_collate for lists of samples
    assert torch.equal(collate_batched([ds[0], ds[1]])["image"], ds.images[:2])


def test_decodes_lossless_images_exactly(tmp_path, make_image):
    expected = [make_image(tmp_path / f"{i}.png", value=i) for i in range(5)]
    ds = InMemoryImageDataset.from_sources([tmp_path / f"{i}.png" for i in range(5)], labels=[0, 1, 0, 1, 0])
    assert ds.images.shape == (5, 3, 6, 8) and ds.images.is_contiguous()
    for i, array in enumerate(expected):
        assert np.array_equal(ds[i]["image"].permute(1, 2, 0).numpy(), array)
    assert ds.files == [str(tmp_path / f"{i}.png") for i in range(5)]
    assert ds.labels.tolist() == [0, 1, 0, 1, 0] and ds.skipped == []


def test_grayscale_and_palette_become_rgb(tmp_path, make_image):
    gray = make_image(tmp_path / "gray.png", value=1, mode="L")
    palette = make_image(tmp_path / "pal.png", value=2, mode="P")
    ds = InMemoryImageDataset.from_sources([tmp_path / "gray.png", tmp_path / "pal.png"], cache=False)
    assert ds.images.shape == (2, 3, 6, 8)
    assert np.array_equal(ds[0]["image"].permute(1, 2, 0).numpy(), gray)
    assert np.array_equal(ds[1]["image"].permute(1, 2, 0).numpy(), palette)


def test_differing_sizes_need_image_size(tmp_path, make_image):
    make_image(tmp_path / "a.png", size=(8, 6))
    make_image(tmp_path / "b.png", size=(7, 7))
    sources = [tmp_path / "a.png", tmp_path / "b.png"]
    with pytest.raises(DataError, match="image_size") as info:
        InMemoryImageDataset.from_sources(sources, cache=False)
    assert "b.png" in str(info.value) and "\n" not in str(info.value)
    ds = InMemoryImageDataset.from_sources(sources, image_size=5, cache=False)
    assert ds.images.shape == (2, 3, 5, 5)
    expected = np.asarray(Image.open(tmp_path / "b.png").convert("RGB").resize((5, 5), Image.Resampling.BILINEAR))
    assert np.array_equal(ds[1]["image"].permute(1, 2, 0).numpy(), expected)


def _broken_files(folder: Path, jpeg: bytes) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "truncated": folder / "truncated.jpg",
        "empty": folder / "empty.jpg",
        "text": folder / "notes.png",
    }
    files["truncated"].write_bytes(jpeg[: len(jpeg) // 2])
    files["empty"].write_bytes(b"")
    files["text"].write_text("this is not an image\n")
    return files


@pytest.mark.parametrize("kind", ["truncated", "empty", "text"])
def test_corrupt_file_is_an_error_naming_it(tmp_path, make_image, jpeg_bytes, kind):
    make_image(tmp_path / "good.png")
    bad = _broken_files(tmp_path / "bad", jpeg_bytes)[kind]
    with pytest.raises(DataError, match="cannot decode image") as info:
        InMemoryImageDataset.from_sources([tmp_path / "good.png", bad], cache=False)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


def test_truncated_jpeg_fails_even_if_pillow_tolerance_was_on(tmp_path, jpeg_bytes, monkeypatch):
    bad = _broken_files(tmp_path, jpeg_bytes)["truncated"]
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(DataError, match="truncated.jpg"):
        decode.decode_images([bad])


def test_skip_corrupt_counts_and_logs(tmp_path, make_image, jpeg_bytes, caplog):
    good = [tmp_path / f"good{i}.png" for i in range(3)]
    arrays = [make_image(p, value=i) for i, p in enumerate(good)]
    bad = list(_broken_files(tmp_path / "bad", jpeg_bytes).values())
    # the first source is corrupt too: the image that fixes H and W must be the first *decodable* one
    sources = [bad[0], good[0], bad[1], good[1], bad[2], good[2]]
    with caplog.at_level(logging.WARNING, logger="rspretrain"):
        ds = InMemoryImageDataset.from_sources(sources, labels=[0, 1, 0, 1, 0, 1], skip_corrupt=True)
    assert len(ds) == 3 and ds.skipped == [str(p) for p in bad]
    assert ds.files == [str(p) for p in good] and ds.labels.tolist() == [1, 1, 1]
    for i, array in enumerate(arrays):
        assert np.array_equal(ds[i]["image"].permute(1, 2, 0).numpy(), array)
    assert any("skipped 3 of 6" in r.getMessage() for r in caplog.records)
    # the cached entry remembers what was skipped
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rspretrain"):
        again = InMemoryImageDataset.from_sources(sources, labels=[0, 1, 0, 1, 0, 1], skip_corrupt=True)
    assert again.skipped == ds.skipped and torch.equal(again.images, ds.images)
    assert any("skipped 3 of 6" in r.getMessage() for r in caplog.records)


def test_all_corrupt_is_an_error(tmp_path, jpeg_bytes):
    with pytest.raises(DataError, match="none of the 3 images"):
        decode.decode_images(list(_broken_files(tmp_path, jpeg_bytes).values()), skip_corrupt=True)


def test_sixteen_bit_image_is_refused(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((4, 4), 1000, dtype=np.uint16)).save(path)
    with pytest.raises(DataError, match="read_raster") as info:
        InMemoryImageDataset.from_sources([path], cache=False, skip_corrupt=True)
    assert "deep.png" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        decode.decode_images([tmp_path / "absent.png"])


def test_zip_members(tmp_path, make_image, jpeg_bytes):
    make_image(tmp_path / "a.png", value=3)
    buffer = io.BytesIO()
    Image.open(tmp_path / "a.png").save(buffer, format="PNG")
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("dir/a.png", buffer.getvalue())
        handle.writestr("dir/bad.jpg", jpeg_bytes[:300])
    ds = InMemoryImageDataset.from_sources([ZipMember(archive, "dir/a.png")], cache=False)
    assert ds.files == [f"{archive}:dir/a.png"]
    assert np.array_equal(ds[0]["image"].permute(1, 2, 0).numpy(), np.asarray(Image.open(tmp_path / "a.png")))
    with pytest.raises(DataError, match="images.zip:dir/bad.jpg: cannot decode image"):
        decode.decode_images([ZipMember(archive, "dir/a.png"), ZipMember(archive, "dir/bad.jpg")])
    with pytest.raises(DataError, match="images.zip:dir/nope.png: member not found"):
        decode.decode_images([ZipMember(archive, "dir/nope.png")])


def test_cache_hit_does_not_decode(tmp_path, make_image, monkeypatch):
    sources = [tmp_path / f"{i}.png" for i in range(4)]
    for i, path in enumerate(sources):
        make_image(path, value=i)
    first = InMemoryImageDataset.from_sources(sources, labels=[0, 1, 2, 3])
    key = cache.cache_key(sources, None, False)
    assert (cache.cache_dir() / "decoded" / f"{key}.npy").is_file()
    assert str(cache.cache_dir()) == os.environ["RSPRETRAIN_CACHE"]

    def refuse(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(decode, "decode_images", refuse)
    second = InMemoryImageDataset.from_sources(sources, labels=[0, 1, 2, 3])
    assert torch.equal(first.images, second.images) and second.files == first.files
    with pytest.raises(AssertionError, match="decoded again"):
        InMemoryImageDataset.from_sources(sources, cache=False)
    with pytest.raises(AssertionError, match="decoded again"):  # a different size is a different entry
        InMemoryImageDataset.from_sources(sources, image_size=4)
    monkeypatch.undo()

    # a changed file (new content, new mtime) invalidates the entry
    make_image(sources[2], value=99)
    stat = sources[2].stat()
    os.utime(sources[2], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = InMemoryImageDataset.from_sources(sources)
    assert not torch.equal(third.images[2], first.images[2])
    assert torch.equal(third.images[[0, 1, 3]], first.images[[0, 1, 3]])


def test_unreadable_cache_entry_is_ignored(tmp_path, make_image, caplog):
    sources = [tmp_path / "a.png", tmp_path / "b.png"]
    for i, path in enumerate(sources):
        make_image(path, value=i)
    expected = InMemoryImageDataset.from_sources(sources).images.clone()  # the entry is mapped: copy it first
    entry = cache.cache_dir() / "decoded" / f"{cache.cache_key(sources, None, False)}.npy"
    entry.unlink()  # (writing into a mapped file would change the first dataset's pixels under it)
    entry.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="rspretrain"):
        second = InMemoryImageDataset.from_sources(sources)
    assert torch.equal(expected, second.images)
    assert any("unreadable cache entry" in r.getMessage() for r in caplog.records)
    assert np.load(entry).shape == (2, 3, 6, 8)  # rewritten correctly


def test_a_flipped_bit_in_a_cache_entry_is_caught_and_decoded_again(tmp_path, make_image, caplog):
    sources = [tmp_path / "a.png", tmp_path / "b.png"]
    for i, path in enumerate(sources):
        make_image(path, value=10 * i + 5)
    expected = InMemoryImageDataset.from_sources(sources).images.clone()
    entry = cache.cache_dir() / "decoded" / f"{cache.cache_key(sources, None, False)}.npy"
    rotted = bytearray(entry.read_bytes())
    rotted[-7] ^= 0x10  # one bit of one pixel: a valid .npy of the right shape, silently wrong without a checksum
    entry.unlink()  # a new file, not a write into the pages the first dataset maps
    entry.write_bytes(bytes(rotted))
    assert cache.load_cached(entry.stem, verify=False)[0].sum() != expected.sum()  # the rot is really there
    with caplog.at_level(logging.WARNING, logger="rspretrain"):
        second = InMemoryImageDataset.from_sources(sources)
    assert torch.equal(expected, second.images)
    assert any(str(entry) in r.getMessage() and "CRC-32 mismatch" in r.getMessage() for r in caplog.records)
    assert cache.load_cached(entry.stem) is not None  # rewritten whole: the next load verifies


def _load_and_record(sources, log):
    images = InMemoryImageDataset.from_sources(sources).images
    with open(log, "a") as handle:
        handle.write(f"loaded {int(images.sum())}\n")


def test_processes_of_a_machine_decode_once_and_share_one_mapped_copy(tmp_path, make_image, monkeypatch):
    import multiprocessing

    sources = [tmp_path / f"{i}.png" for i in range(6)]
    for i, path in enumerate(sources):
        make_image(path, value=i)
    log = tmp_path / "log.txt"
    real = decode.decode_images

    def counted(*args, **kwargs):
        with open(log, "a") as handle:
            handle.write("decoded\n")
        time.sleep(0.5)  # the others arrive while this one decodes
        return real(*args, **kwargs)

    monkeypatch.setattr(decode, "decode_images", counted)
    context = multiprocessing.get_context("fork")  # the children inherit the counting decoder
    workers = [context.Process(target=_load_and_record, args=(sources, log)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    lines = log.read_text().splitlines()
    assert lines.count("decoded") == 1 and len({line for line in lines if line.startswith("loaded")}) == 1
    mapped, _ = cache.load_cached(cache.cache_key(sources, None, False))
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable  # read-only, shared page cache


def test_the_in_memory_pixel_limit_replaces_pillows_and_names_the_file(tmp_path, make_image, monkeypatch):
    make_image(tmp_path / "wide.png", size=(40, 30))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow alone would refuse it as a decompression bomb
    assert decode.decode_images([tmp_path / "wide.png"]).array.shape == (1, 3, 30, 40)
    monkeypatch.setattr(decode, "DEFAULT_MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DataError, match=r"wide.png: 40x30 px is above the in-memory limit of 1000 pixels"):
        decode.decode_images([tmp_path / "wide.png"])
