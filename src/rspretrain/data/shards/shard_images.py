"""A prepared (sharded) image set streamed for training: :class:`ShardImages`, litdata's ``StreamingDataset``
with the decoding and decode-time crops of :mod:`.decode_crops`.

Each rank and each DataLoader worker reads its own chunks (litdata assigns them); nothing holds the set. A sample is
``{"image": uint8 (V, 3, S, S) crops or (3, S, S), "crop_boxes": float32 (V, 4), "index": int64, "label": int64}``
(``index``: the sample's position in the set) (no ``label`` for
unlabelled sets). The randomness of a sample's crops is a function of (seed, epoch, sample index), so the loader state
litdata saves in the checkpoint is all a resumed run needs to see the same crops again.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from litdata import StreamingDataset

from rspretrain.core.errors import DataError
from rspretrain.data.shards.decode_crops import DecodePlan, decode_crops
from rspretrain.data.shards.manifest import ShardManifest, is_remote, read_manifest

log = logging.getLogger("rspretrain")


class ShardImages(StreamingDataset):
    """Stream a set written by ``rspretrain prepare``.

    Args:
        location: the prepared folder, or its object-storage URL (``s3://bucket/prefix``).
        plan: what each image becomes (:class:`DecodePlan`); settable later with :meth:`set_plan` (the datamodule
            sets it once the method, and so its view recipe, is known).
        seed: shuffling and crop seed.
        shuffle: shuffle chunks and items each epoch.
        skip_corrupt: a record that cannot be decoded is replaced by the next one and counted (else DataError).
        cache_dir: local cache of remote chunks (litdata's; default under ``~/.lightning``).
        max_cache_size: bound of that cache (e.g. ``"50GB"``).
        storage_options: object-storage client options (e.g. ``{"endpoint_url": "http://..."}`` for an
            S3-compatible server).
        drop_last: drop the last partial batch of each rank (needed under DDP, where ranks step together).
        manifest: the set's manifest when the caller has read it already
            (:func:`~rspretrain.data.shards.open_prepared.open_prepared`).

    Raises:
        DataError: not a prepared set, a half-written one, or unreachable storage (one line naming the URL).
    """

    def __init__(
        self,
        location: str,
        plan: DecodePlan | None = None,
        seed: int = 0,
        shuffle: bool = True,
        skip_corrupt: bool = False,
        cache_dir: str | None = None,
        max_cache_size: str | None = None,
        storage_options: dict[str, Any] | None = None,
        drop_last: bool = True,
        manifest: ShardManifest | None = None,
    ) -> None:
        location = str(location)
        if is_remote(location):
            _boto3_for_plain_http(storage_options)
        self.manifest = manifest or read_manifest(location, storage_options=storage_options)
        kwargs: dict[str, Any] = {"storage_options": dict(storage_options or {})}
        if max_cache_size is not None:
            kwargs["max_cache_size"] = max_cache_size
        try:
            super().__init__(location, cache_dir=cache_dir, shuffle=shuffle, seed=seed, drop_last=drop_last, **kwargs)
        except Exception as exc:  # noqa: BLE001 - litdata / boto raise many types for a bad location
            raise DataError(f"{location}: cannot open the prepared set ({' '.join(str(exc).split())[:300]})") from None
        self.location, self.plan, self.crop_seed, self.skip_corrupt = location, plan, int(seed), skip_corrupt
        self.remote = is_remote(location)
        self.plain_http_options = dict(storage_options or {}) if self.remote else None
        self.classes = self.manifest.classes
        self.band_names = tuple(self.manifest.band_names)
        self.value_scale = float(self.manifest.value_scale)
        self.skipped_records = 0

    #: Samples are decoded and cropped by a :class:`DecodePlan` the method's views decide (:meth:`set_plan`).
    decodes_images = True

    @property
    def labelled(self) -> bool:
        return self.classes is not None

    def set_plan(self, plan: DecodePlan) -> None:
        self.plan = plan

    def raw_record(self, index: Any) -> dict[str, Any]:
        """litdata's record ``index`` as written, before any decoding."""
        if self.plain_http_options is not None:  # again in each worker: a spawned one re-imports litdata
            _boto3_for_plain_http(self.plain_http_options)
        return StreamingDataset.__getitem__(self, index)

    def __getitem__(self, index: Any) -> dict[str, torch.Tensor]:
        if self.plan is None:
            raise RuntimeError(f"{self.location}: no decode plan set (ShardImages.set_plan)")
        position = int(getattr(index, "index", index))
        for attempt in range(len(self)):
            record = self.raw_record(index if attempt == 0 else (position + attempt) % len(self))
            sample = position if attempt == 0 else (position + attempt) % len(self)
            name = f"{self.location} sample {sample} ({bytes(record['name']).decode(errors='replace')})"
            rng = np.random.default_rng([self.crop_seed, int(self.current_epoch), sample])
            try:
                images, boxes = decode_crops(bytes(record["image"]), self.plan, rng, name)
            except DataError:
                if not self.skip_corrupt:
                    raise
                self.skipped_records += 1
                log.warning("skipping an unreadable record (%d so far in this worker): %s", self.skipped_records, name)
                continue
            out = {"image": torch.from_numpy(images if self.plan.crop_scales else images[0]),
                   "crop_boxes": torch.from_numpy(boxes), "index": torch.tensor(sample, dtype=torch.int64)}
            if "label" in record:
                out["label"] = torch.tensor(int(record["label"]), dtype=torch.int64)
            return out
        raise DataError(f"{self.location}: no readable record")


def _boto3_for_plain_http(storage_options: dict[str, Any] | None) -> None:
    """Chunks from a plain-HTTP S3-compatible endpoint (MinIO or moto on a private network) through boto3.

    litdata 0.2.76 fetches S3 chunks with obstore when it is installed, but builds obstore's store without
    ``allow_http``, so every GET to an ``http://`` endpoint fails ("builder error") and the loader stops. For such
    endpoints this switches litdata's obstore path off in this process (and the workers it forks) -- its flag, and
    its asyncio chunk prefetch (``LITDATA_ASYNC_CHUNK_PREFETCH=0``), which calls obstore without asking the flag --
    leaving its boto3 path, which honours the endpoint; ``https://`` endpoints and AWS keep obstore.
    """
    import os

    endpoint = str((storage_options or {}).get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL") or "")
    if endpoint.startswith("http://"):
        import litdata.streaming.downloader as downloader

        downloader._OBSTORE_AVAILABLE = False
        os.environ.setdefault("LITDATA_ASYNC_CHUNK_PREFETCH", "0")


def collate_streamed(samples: list) -> dict[str, torch.Tensor]:
    """Batch samples of :class:`ShardImages`, or pairs of them from litdata's ``ParallelStreamingDataset`` (GeRSP's
    RS + natural sources: the second becomes ``natural_image`` / ``natural_label``)."""
    if isinstance(samples[0], dict):
        return torch.utils.data.default_collate(samples)
    rs = torch.utils.data.default_collate([pair[0] for pair in samples])
    natural = torch.utils.data.default_collate([pair[1] for pair in samples])
    if "label" not in natural:
        raise DataError("the natural-image shards have no labels (GeRSP's supervised branch needs them)")
    return {**rs, "natural_image": natural["image"], "natural_label": natural["label"]}
