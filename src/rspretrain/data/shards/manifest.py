"""The manifest of a prepared (sharded) image set: ``DIR/rspretrain.json`` beside litdata's ``index.json``.

It holds what training needs to know without a pass over the data -- the number of images, the classes, the band
names, the value scale and the per-band mean / std -- plus what was prepared from what (source, options, skipped
files, sizes). ``complete`` is false from the moment ``prepare`` starts until its last chunk and litdata's index are
written, so a set whose preparation was killed is never read as complete.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rspretrain.core.errors import DataError
from rspretrain.core.json_io import write_json

MANIFEST_NAME = "rspretrain.json"
#: Bump when the record layout changes; older sets are refused with a message to prepare them again.
FORMAT_VERSION = 1


@dataclass
class ShardManifest:
    """Contents of ``rspretrain.json`` (see the module docstring)."""

    source: str
    options: dict[str, Any]
    complete: bool = False
    #: ``"images"`` (image files, decoded and cropped when read) or ``"tiles"`` (raster tiles, stored as arrays).
    kind: str = "images"
    count: int = 0
    classes: list[str] | None = None
    class_counts: dict[str, int] | None = None
    band_names: list[str] = field(default_factory=lambda: ["red", "green", "blue"])
    value_scale: float = 255.0
    dtype: str = "uint8"
    encoding: str = "original file bytes (JPEG/PNG/... as stored in the source)"
    mean: list[float] | None = None
    std: list[float] | None = None
    stats_images: int = 0
    image_sizes: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    source_bytes: int = 0
    shard_bytes: int = 0
    writer_processes: int = 0
    #: Tiles: their side (px), what their ``label`` is (``"proportions"``: land-cover class proportions, or None) and
    #: one entry per scene (files, CRS, tiles kept and dropped, by reason).
    tile: int | None = None
    target_kind: str | None = None
    scenes: list[dict[str, Any]] = field(default_factory=list)
    format: str = "rspretrain-shards"
    version: int = FORMAT_VERSION

    @property
    def in_chans(self) -> int:
        return len(self.band_names)

    def write(self, folder: Path) -> None:
        write_json(Path(folder) / MANIFEST_NAME, asdict(self))


def is_remote(location: str) -> bool:
    """True for an object-storage URL (``s3://``, ``gs://``, ...) rather than a local folder."""
    return "://" in str(location)


def read_manifest(
    location: str | Path, require_complete: bool = True, storage_options: dict[str, Any] | None = None
) -> ShardManifest:
    """The manifest of a prepared set (a local folder, or an ``s3://`` URL read through litdata's storage).

    Raises:
        DataError: no manifest (not a prepared set), a half-written set (``prepare`` was interrupted: rerunning it
            resumes), an unreadable manifest or one of another format version.
    """
    name = f"{location}/{MANIFEST_NAME}" if is_remote(str(location)) else str(Path(location) / MANIFEST_NAME)
    text = _read_remote(str(location), storage_options) if is_remote(str(location)) else _read_local(Path(location))
    try:
        raw = json.loads(text)
        if raw.get("format") != "rspretrain-shards":
            raise ValueError("not an rspretrain shard manifest")
        if raw.get("version") != FORMAT_VERSION:
            raise DataError(f"{name}: prepared with shard format {raw.get('version')}, this version reads "
                            f"{FORMAT_VERSION}; prepare the set again")
        manifest = ShardManifest(**raw)
    except DataError:
        raise
    except (ValueError, TypeError) as exc:
        raise DataError(f"{name}: unreadable manifest ({exc})") from None
    if require_complete and not manifest.complete:
        raise DataError(f"{location}: a half-written prepared set (prepare was interrupted); run "
                        f"`rspretrain prepare {manifest.source} --out {location}` again to finish it")
    return manifest


def _read_local(folder: Path) -> str:
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder (expected a set written by `rspretrain prepare`)")
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise DataError(f"{folder}: no {MANIFEST_NAME}; not a set written by `rspretrain prepare`")
    return path.read_text()


def _read_remote(url: str, storage_options: dict[str, Any] | None) -> str:
    """Read the manifest from S3(-compatible) storage with boto3 and the storage options litdata streams with.

    Not litdata's client: it retries a refused connection up to 1000 times (minutes before an unreachable URL is
    reported), and its downloader may start obstore's runtime, which must not run in the process that later forks
    the DataLoader workers. Three attempts here make a wrong endpoint one line within seconds.
    """
    from urllib.parse import urlparse

    import boto3
    import botocore.config

    parsed = urlparse(url)
    remote = f"{url.rstrip('/')}/{MANIFEST_NAME}"
    if parsed.scheme != "s3":
        raise DataError(f"{url}: object storage is read through s3:// URLs (any S3-compatible server, with "
                        "data.storage_options.endpoint_url)")
    key = f"{parsed.path.strip('/')}/{MANIFEST_NAME}".lstrip("/")
    try:
        config = botocore.config.Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10)
        client = boto3.client("s3", config=config, **dict(storage_options or {}))
        body = client.get_object(Bucket=parsed.netloc, Key=key)
        return body["Body"].read().decode()
    except Exception as exc:  # noqa: BLE001 - boto raises many types for unreachable storage
        raise DataError(f"{remote}: cannot read ({' '.join(str(exc).split())[:300]})") from None
