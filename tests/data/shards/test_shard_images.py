"""Streaming a prepared set: samples, per-sample seeded crops, bad records, ranks reading disjoint parts, and S3."""

import os
from pathlib import Path

import litdata
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from litdata import StreamingDataLoader

from rspretrain.core.errors import DataError
from rspretrain.data.shards.decode_crops import DecodePlan
from rspretrain.data.shards.manifest import ShardManifest
from rspretrain.data.shards.shard_images import ShardImages, collate_streamed
from tests.data.shards.conftest import free_port

TWO_CROPS = DecodePlan(32, ((0.2, 1.0), (0.2, 1.0)))


def _epoch(dataset, batch_size=4, num_workers=1) -> list[dict]:
    loader = StreamingDataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_streamed)
    return list(loader)


def test_samples_are_decode_time_crops_with_boxes_labels_and_indices(prepared):
    dataset = ShardImages(str(prepared), TWO_CROPS, seed=0, drop_last=False)
    assert len(dataset) == 36 and dataset.classes == ["farm", "forest", "town"] and dataset.value_scale == 255.0
    batches = _epoch(dataset)
    images = torch.cat([b["image"] for b in batches])
    assert images.shape == (36, 2, 3, 32, 32) and images.dtype == torch.uint8
    assert sorted(torch.cat([b["index"] for b in batches]).tolist()) == list(range(36))
    boxes = torch.cat([b["crop_boxes"] for b in batches])
    assert boxes.shape == (36, 2, 4) and (boxes[..., 2:] >= 1).all()
    assert not torch.equal(images[:, 0], images[:, 1])  # two independent crops per image


def test_crops_depend_on_seed_epoch_and_sample_only(prepared):
    def by_index(seed):
        batches = _epoch(ShardImages(str(prepared), TWO_CROPS, seed=seed, drop_last=False), num_workers=2)
        return {int(i): img for b in batches for i, img in zip(b["index"], b["image"])}

    first, again, other = by_index(0), by_index(0), by_index(1)
    assert all(torch.equal(first[i], again[i]) for i in first)  # the worker split does not matter
    assert sum(torch.equal(first[i], other[i]) for i in first) == 0


def test_without_crop_scales_each_image_is_resized_whole(prepared):
    batch = _epoch(ShardImages(str(prepared), DecodePlan(24), drop_last=False), batch_size=36)[0]
    assert batch["image"].shape == (36, 3, 24, 24)


def _write_set(folder: Path, records: list[dict]) -> None:
    litdata.optimize(fn=_identity, inputs=records, output_dir=str(folder), num_workers=1, verbose=False,
                     chunk_bytes="1MB")
    ShardManifest(source="test", options={}, complete=True, count=len(records), mean=[0.5] * 3,
                  std=[0.25] * 3).write(folder)


def _identity(record):
    return record


def test_a_corrupt_record_names_the_set_sample_and_file_or_is_skipped(prepared, tmp_path):
    good = litdata.StreamingDataset(str(prepared))[0]
    records = [{"index": i, "name": f"img{i}.jpg".encode(), "image": bytes(good["image"])} for i in range(8)]
    records[5]["image"] = b"\x00" * 64
    _write_set(tmp_path / "bad", records)
    with pytest.raises(DataError, match=r"bad sample 5 \(img5.jpg\): not a recognised image format"):
        _epoch(ShardImages(str(tmp_path / "bad"), TWO_CROPS, shuffle=False, drop_last=False), num_workers=0)
    batches = _epoch(ShardImages(str(tmp_path / "bad"), TWO_CROPS, shuffle=False, skip_corrupt=True,
                                 drop_last=False), num_workers=0)
    indices = torch.cat([b["index"] for b in batches]).tolist()
    assert len(indices) == 8 and 5 not in indices and indices.count(6) == 2  # replaced by the next record


def test_a_half_written_or_foreign_folder_is_refused(prepared, tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        ShardImages(str(tmp_path / "missing"))
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="not a set written by `rspretrain prepare`"):
        ShardImages(str(tmp_path / "plain"))
    half = tmp_path / "half"
    _write_set(half, [{"index": 0, "name": b"a", "image": b"x"}])
    manifest = ShardManifest(source="folder:/data/x", options={}, complete=False)
    manifest.write(half)
    with pytest.raises(DataError, match=r"half-written .* `rspretrain prepare folder:/data/x --out"):
        ShardImages(str(half))


# ---------------------------------------------------------------------------------------------- two ranks (gloo)


def _rank_epoch(rank: int, world: int, port: int, location: str, out: str) -> None:
    from rspretrain.pretrain.datamodule import PretrainDataModule

    # As in training: the data is set up (the model is built from it) before the process group exists.
    dm = PretrainDataModule(f"shards:{location}", batch_size=3, num_workers=2, seed=3)
    dm.setup()
    dm.set_decode_crops(16, ())
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        indices = torch.cat([b["index"] for b in dm.train_dataloader()])
        torch.save(indices, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_ranks_read_disjoint_samples_and_together_cover_the_epoch_once(prepared, tmp_path):
    mp.spawn(_rank_epoch, args=(2, free_port(), str(prepared), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt").tolist() for r in (0, 1))
    assert len(rank0) == len(rank1) == 18 and not set(rank0) & set(rank1)  # 36 images: 6 batches of 3 per rank
    assert sorted(rank0 + rank1) == list(range(36))


# ------------------------------------------------------------------------------- S3: a real server on localhost


def test_a_set_streams_from_an_s3_compatible_server(prepared, s3_server, tmp_path):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket="rs-archive")
    for path in prepared.iterdir():
        if path.is_file():
            client.upload_file(str(path), "rs-archive", f"prepared/scenes/{path.name}")
    options = {"endpoint_url": s3_server}
    dataset = ShardImages("s3://rs-archive/prepared/scenes", TWO_CROPS, storage_options=options,
                          cache_dir=str(tmp_path / "cache"), drop_last=False)
    assert dataset.remote and dataset.classes == ["farm", "forest", "town"]
    local = {int(i): img for b in _epoch(ShardImages(str(prepared), TWO_CROPS, drop_last=False))
             for i, img in zip(b["index"], b["image"])}
    remote = {int(i): img for b in _epoch(dataset) for i, img in zip(b["index"], b["image"])}
    assert sorted(remote) == list(range(36)) and all(torch.equal(remote[i], local[i]) for i in local)
    with pytest.raises(DataError, match=r"^s3://rs-archive/elsewhere/rspretrain.json: cannot read \(.*NoSuchKey"):
        ShardImages("s3://rs-archive/elsewhere", storage_options=options)
    with pytest.raises(DataError, match=r"^s3://rs-archive/prepared/scenes/rspretrain.json: cannot read"):
        ShardImages("s3://rs-archive/prepared/scenes", storage_options={"endpoint_url": "http://127.0.0.1:1"})
