"""Open a prepared set as the dataset of its kind, reading its manifest once."""

from __future__ import annotations

from typing import Any

from rspretrain.data.shards.manifest import is_remote, read_manifest
from rspretrain.data.shards.shard_images import ShardImages, _boto3_for_plain_http
from rspretrain.data.shards.shard_tiles import ShardTiles


def open_prepared(location: str, storage_options: dict[str, Any] | None = None, **kwargs: Any) -> ShardImages:
    """A set written by ``rspretrain prepare``: :class:`~rspretrain.data.shards.shard_images.ShardImages` for image
    files, :class:`~rspretrain.data.shards.shard_tiles.ShardTiles` for raster tiles (``kwargs``: theirs).

    Raises:
        DataError: not a prepared set, a half-written one, or unreachable storage (see ``read_manifest``).
    """
    if is_remote(str(location)):
        _boto3_for_plain_http(storage_options)
    manifest = read_manifest(str(location), storage_options=storage_options)
    cls = ShardTiles if manifest.kind == "tiles" else ShardImages
    return cls(str(location), storage_options=storage_options, manifest=manifest, **kwargs)
