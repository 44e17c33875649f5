"""DataModule for pretraining: one unlabeled (or labeled, labels unused) image source, batched.

Two paths:

* in memory (every spec but ``shards:``; the small sets): images are held decoded (see :mod:`rspretrain.data`), so
  a batch is one tensor gather through the dataset's ``__getitems__``; per-band mean/std (in the [0, 1] value range)
  are measured on the training images;
* streamed (``shards:DIR`` or ``shards:s3://...``, written by ``rspretrain prepare``): litdata's loader, each rank
  and worker reading its own chunks, images decoded and cropped in the workers at the view size
  (:class:`~rspretrain.data.shards.shard_images.ShardImages`); bands, classes and mean/std come from the set's
  manifest, so no pass over the data is made; the loader's position is saved in checkpoints (Lightning stores a
  stateful loader's ``state_dict``), so a resumed run continues inside the epoch.

Either way augmentation happens later, batched, on the model's device, and the statistics travel with the model into
checkpoints and exports.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.data.band_statistics import band_statistics
from rspretrain.data.shards.decode_crops import DEFAULT_MAX_IMAGE_PIXELS, DecodePlan
from rspretrain.data.step_indexed_sampler import StepIndexedBatchSampler

SHARDS_PREFIX = "shards:"
log = logging.getLogger("rspretrain")


def batch_as_is(batch: Any) -> Any:
    """Collate function for datasets whose ``__getitems__`` already returns a batched dict."""
    return batch


def main_is_import_safe() -> bool:
    """Whether a spawned process may import ``__main__`` again: true for the ``rspretrain`` command (its console
    script and ``python -m rspretrain`` guard their entry) and for a main module without a file (an interactive
    session, where spawn imports nothing); false for any other script, which may train at import."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is None:
        return True
    spec = getattr(main, "__spec__", None)
    return (spec is not None and str(spec.name).startswith("rspretrain")) or Path(path).name == "rspretrain"


#: ``data.worker_start`` choices (see :meth:`PretrainDataModule.worker_context`).
WORKER_STARTS = ("auto", "fork", "forkserver", "spawn")


class PretrainDataModule(L.LightningDataModule):
    """Batches of ``{"image": uint8/raw (B, C, H, W), ...}`` from any dataset spec.

    Args:
        dataset: a spec for :func:`rspretrain.data.build_dataset` ("eurosat", "ucmerced",
            "folder:PATH", "unlabeled:PATH", "geotiff:PATH", ...).
        root: data root for the named datasets.
        split: which split to pretrain on.
        image_size: decode size (None = native size).
        max_per_class: keep at most this many images per class (quick runs).
        batch_size: per-device batch size.
        num_workers: DataLoader workers (0 is right for in-memory data).
        worker_start: how streamed data's workers start (``auto``, ``fork``, ``forkserver``, ``spawn``; see
            :meth:`worker_context`).
        skip_corrupt: skip unreadable images (counted) instead of failing.
        stats_max_images: images used to measure band statistics.
        natural_dataset: a labeled natural-image dataset spec ("cifar10", "folder:PATH") paired
            with the RS images (the ``natural_images`` knowledge term's source, e.g. GeRSP's; the run sets it from
            the term's ``dataset``); batches then also hold "natural_image"/"natural_label".
        natural_split: its split.
        epoch_length: items per epoch of the pairing (default: the larger source).
        dataset_options: further keyword arguments of the dataset (e.g. for ``"landcover:PATH"``: ``land_cover``,
            ``scheme``, ``tile``, ``stride``; see :func:`rspretrain.data.build_dataset`).
        natural_image_size: decode size of an in-memory natural source (needed when its images differ in size,
            e.g. an ImageNet-layout folder); None keeps their own size.
        max_image_pixels: streamed data: the largest image read (see :mod:`rspretrain.data.shards.decode_crops`).
        shard_cache: streamed data from object storage: local chunk cache folder (litdata's default if None).
        storage_options: streamed data from object storage: client options (``endpoint_url``, ...).
        loading: ``"memory"``, ``"stream"`` or ``"auto"``: how an image-file source (a named set, ``folder:``,
            ``unlabeled:``) is read. ``stream`` prepares it once into shards under ``$RSPRETRAIN_CACHE/shards`` (one
            process per machine; the others wait) and streams them; ``auto`` streams when the decoded images would
            exceed ``memory_limit_gb``. ``shards:`` always stream. Raster scenes (``geotiff:``, ``landcover:``) are
            tiled in memory under ``auto``; ``stream`` tiles them once into the cache and streams the tiles.
        memory_limit_gb: the decoded size above which ``auto`` streams.
        seed: shuffling seed.
    """

    def __init__(
        self,
        dataset: str = "eurosat",
        root: str | None = None,
        split: str = "train",
        image_size: int | None = None,
        max_per_class: int | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        skip_corrupt: bool = False,
        stats_max_images: int = 2000,
        natural_dataset: str | None = None,
        natural_split: str = "train",
        epoch_length: int | None = None,
        dataset_options: dict[str, Any] | None = None,
        natural_image_size: int | None = None,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        shard_cache: str | None = None,
        storage_options: dict[str, Any] | None = None,
        loading: str = "auto",
        memory_limit_gb: float = 8.0,
        worker_start: str = "auto",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.spec, self.root, self.split = dataset, root, split
        self.image_size, self.max_per_class = image_size, max_per_class
        self.batch_size, self.num_workers = batch_size, num_workers
        self.skip_corrupt, self.stats_max_images, self.seed = skip_corrupt, stats_max_images, seed
        self.natural_spec, self.natural_split, self.epoch_length = natural_dataset, natural_split, epoch_length
        self.dataset_options = dict(dataset_options or {})
        self.natural_image_size, self.max_image_pixels = natural_image_size, int(max_image_pixels)
        self.shard_cache, self.storage_options = shard_cache, dict(storage_options or {})
        if loading not in ("auto", "memory", "stream"):
            raise ConfigError(f"data.loading must be auto, memory or stream, got {loading!r}")
        self.loading, self.memory_limit_gb = loading, float(memory_limit_gb)
        if worker_start not in WORKER_STARTS:
            raise ConfigError(f"data.worker_start must be one of {', '.join(WORKER_STARTS)}, got {worker_start!r}")
        self.worker_start = worker_start
        self.dataset = self.natural = None
        self.streamed = str(dataset).startswith(SHARDS_PREFIX)
        if natural_dataset is not None and str(natural_dataset).startswith(SHARDS_PREFIX) != self.streamed:
            raise ConfigError(f"data.dataset {dataset!r} and data.natural_dataset {natural_dataset!r}: both or neither "
                              "must be prepared shards (rspretrain prepare)")

    def _decoded_gb(self, spec: str, split: str, options: dict[str, Any], image_size: int | None) -> float | None:
        """The decoded size of an image-file source held in memory, estimated from its listing (and, without a
        decode size, the headers of up to 32 images); None for sources that are not image files."""
        from rspretrain.data.build import list_image_sources
        from rspretrain.data.io.decode import ZipMember, open_zip

        try:
            listed = list_image_sources(spec, root=self.root, split=split, **options)
        except (DataError, ConfigError):
            return None  # not an image-file source (rasters...): read as before, which reports real problems
        if image_size is not None:
            return len(listed.sources) * 3 * image_size**2 / 1e9
        from PIL import Image

        picks = listed.sources[:: max(1, len(listed.sources) // 32)][:32]
        pixels = []
        with contextlib.ExitStack() as stack:
            archives: dict = {}
            for source in picks:
                try:
                    if isinstance(source, ZipMember):
                        if source.archive not in archives:  # one central-directory read per archive
                            archives[source.archive] = stack.enter_context(open_zip(source.archive))
                        with archives[source.archive].open(source.member) as handle:
                            pixels.append(Image.open(handle).size)
                    else:
                        pixels.append(Image.open(source).size)
                except Exception:  # noqa: BLE001 - an unreadable image is reported by whichever path reads it
                    continue
        mean = sum(w * h for w, h in pixels) / max(1, len(pixels))
        return len(listed.sources) * 3 * mean / 1e9

    def _prepared_location(self, spec: str, split: str, options: dict[str, Any]) -> str:
        """``rspretrain prepare`` of a source into the cache, once per machine (the others wait). Raster scenes are few
        and large: their files' sizes and times are part of the key, so a rewritten scene is tiled again."""
        import hashlib
        import json
        import os

        from rspretrain.data.build import RASTER_KINDS, list_raster_scenes
        from rspretrain.data.io.cache import cache_dir, entry_lock
        from rspretrain.data.shards.prepare import prepare

        files = []
        if spec.partition(":")[0].strip().lower() in RASTER_KINDS:
            scenes = list_raster_scenes(spec, root=self.root, split=split, **options)
            paths = [f for scene in scenes.scenes for f in scene] + [scenes.options.get("land_cover")] + scenes.labels
            files = [(str(f), os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in paths
                     if f is not None and os.path.exists(f)]
        identity = json.dumps([spec, str(self.root), split, options, files], sort_keys=True, default=str)
        key = "shards-" + hashlib.sha256(identity.encode()).hexdigest()[:24]
        out = cache_dir() / "shards" / key
        with entry_lock(key):
            prepare(spec, out, root=self.root, split=split, workers=max(1, self.num_workers),
                    skip_corrupt=self.skip_corrupt, max_image_pixels=self.max_image_pixels,
                    stats_max_images=self.stats_max_images, seed=self.seed, **options)
        return str(out)

    def _choose_loading(self) -> None:
        """``loading: auto|stream``: turn image-file sources into prepared shards when they should stream."""
        if self.streamed or self.loading == "memory":
            return
        from rspretrain.data.build import RASTER_KINDS

        if str(self.spec).partition(":")[0].strip().lower() in RASTER_KINDS:
            # Scenes are tiled in memory from windowed reads unless asked to stream; then they are tiled once into the
            # cache (rspretrain prepare) and every later run starts from the tiles.
            if self.loading == "stream" and self.natural_spec is None:
                options = {**self.dataset_options}
                if self.image_size is not None:
                    options.setdefault("tile", self.image_size)
                self.spec = SHARDS_PREFIX + self._prepared_location(self.spec, self.split, options)
                self.split, self.dataset_options, self.streamed = "all", {}, True
            elif self.loading == "stream":
                raise ConfigError(f"data.loading stream: {self.spec} is paired with a natural-image source; "
                                  "raster tiles stream alone")
            return
        options = {**self.dataset_options}
        if self.max_per_class is not None:
            options["max_per_class"] = self.max_per_class
        sources = [(self.spec, self.split, options, self.image_size)]
        if self.natural_spec is not None:
            sources.append((self.natural_spec, self.natural_split, {}, self.natural_image_size or self.image_size))
        sizes = [self._decoded_gb(*source) for source in sources]
        if any(size is None for size in sizes):
            if self.loading == "stream":
                raise ConfigError(f"data.loading stream: {self.spec} is not an image-file source; prepare it or "
                                  "read it in memory")
            return
        if self.loading == "auto" and sum(sizes) <= self.memory_limit_gb:
            return
        log.info("streaming %s (about %.1f GB decoded; data.memory_limit_gb %.1f)", self.spec, sum(sizes),
                 self.memory_limit_gb)
        locations = [self._prepared_location(spec, split, opts) for spec, split, opts, _ in sources]
        self.spec = SHARDS_PREFIX + locations[0]
        self.natural_spec = SHARDS_PREFIX + locations[1] if len(locations) > 1 else None
        self.split, self.max_per_class, self.dataset_options, self.streamed = "all", None, {}, True

    def _shards(self, spec: str):
        from rspretrain.data.shards.open_prepared import open_prepared

        if self.split not in ("train", "all"):
            raise ConfigError(f"{spec}: a prepared set is one split; data.split must be 'train' or 'all'")
        if self.max_per_class is not None or self.dataset_options:
            given = ["max_per_class"] * (self.max_per_class is not None) + [
                f"dataset_options.{key}" for key in self.dataset_options]
            raise ConfigError(f"{spec}: data.{', data.'.join(given)} apply when preparing (rspretrain prepare ... "
                              "--max-per-class N, --option.KEY VALUE), not to prepared shards; set data.max_per_class "
                              "null and data.dataset_options {}")
        return open_prepared(spec[len(SHARDS_PREFIX):], seed=self.seed, skip_corrupt=self.skip_corrupt,
                             cache_dir=self.shard_cache, storage_options=self.storage_options)

    def _setup_streamed(self) -> None:
        self.dataset = self._shards(self.spec)
        self.natural = None if self.natural_spec is None else self._shards(self.natural_spec)
        if self.natural is not None:
            if not (self.dataset.decodes_images and self.natural.decodes_images):
                raise ConfigError(f"{self.spec} with {self.natural_spec}: pairing a natural-image source with "
                                  "prepared raster tiles is not supported; GeRSP's streamed sources are image files")
            if not self.natural.labelled:
                raise DataError(f"{self.natural_spec}: the natural image source has no labels (the natural_images "
                                "knowledge term, GeRSP's supervised branch, learns from them)")
            if self.natural.manifest.in_chans != self.dataset.manifest.in_chans:
                raise DataError(f"{self.natural_spec}: natural images have {self.natural.manifest.in_chans} bands "
                                f"but the RS images have {self.dataset.manifest.in_chans}")
        if len(self.dataset) < self.batch_size:
            raise DataError(f"{self.spec}: {len(self.dataset)} images, fewer than one batch of {self.batch_size} "
                            "(lower data.batch_size)")
        self.mean, self.std = list(self.dataset.manifest.mean), list(self.dataset.manifest.std)

    def set_decode_crops(self, image_size: int, crop_scales: tuple[tuple[float, float], ...],
                         natural_crop_scales: tuple[tuple[float, float], ...] = ()) -> None:
        """Streamed data: the view size and per-view crop scales of the method's recipe (its ``decode_crop_scales()``); the
        in-memory path ignores this (its images are decoded at ``image_size`` and cropped on the device)."""
        if not self.streamed:
            return
        self.dataset.set_plan(DecodePlan(image_size, tuple(crop_scales), max_image_pixels=self.max_image_pixels))
        if self.natural is not None:
            self.natural.set_plan(DecodePlan(image_size, tuple(natural_crop_scales),
                                             max_image_pixels=self.max_image_pixels))

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        self._choose_loading()
        if self.streamed:
            self._setup_streamed()
            return
        from rspretrain.data import build_dataset

        # skip_corrupt only when asked: rasters have nothing to skip and take no such option.
        kwargs: dict[str, Any] = {**self.dataset_options, **({"skip_corrupt": True} if self.skip_corrupt else {})}
        if self.max_per_class is not None:
            kwargs["max_per_class"] = self.max_per_class
        self.dataset = build_dataset(self.spec, root=self.root, split=self.split, image_size=self.image_size, **kwargs)
        if self.natural_spec is not None:
            from rspretrain.data.pretrain.paired import PairedDataset

            try:
                natural = build_dataset(self.natural_spec, root=self.root, split=self.natural_split,
                                        image_size=self.natural_image_size, skip_corrupt=self.skip_corrupt)
            except DataError as err:
                if self.natural_image_size is not None or " px but " not in str(err):
                    raise
                raise DataError(f"{err}; set data.natural_image_size (e.g. the view size) to decode images of "
                                "differing sizes, or prepare the source as shards") from None
            self.dataset = PairedDataset(self.dataset, natural, self.epoch_length, self.spec, self.natural_spec)
        if len(self.dataset) < self.batch_size:
            raise DataError(
                f"{self.spec}: {len(self.dataset)} images, fewer than one batch of {self.batch_size} "
                "(lower data.batch_size)"
            )
        self.mean, self.std = band_statistics(self.dataset, self.stats_max_images, self.seed)

    def samples_per_epoch(self) -> int:
        """Items in one epoch (GeRSP's pairing: ``epoch_length`` or the larger source); the recipe's epochs are
        counted in these (:func:`rspretrain.training.recipe.resolve_recipe`). Streamed sets count from their
        manifests, which hold every rank's samples."""
        if not self.streamed:
            return len(self.dataset)
        main = self.dataset.manifest.count
        if self.natural is None:
            return main
        return self.epoch_length or max(main, self.natural.manifest.count)

    @property
    def in_chans(self) -> int:
        if self.streamed:
            return self.dataset.manifest.in_chans
        return int(self.dataset.__getitems__([0])["image"].shape[1])

    @property
    def classes(self) -> list[str] | None:
        """Class names of a labelled main source (None if it has no labels)."""
        if self.streamed:
            return self.dataset.classes
        labelled = getattr(self.dataset, "labels", None) is not None
        return getattr(self.dataset, "classes", None) if labelled else None

    @property
    def band_names(self) -> tuple[str, ...] | None:
        names = getattr(self.dataset, "band_names", None)
        return tuple(names) if names else None

    @property
    def value_scale(self) -> float:
        return float(getattr(self.dataset, "value_scale", 255.0))

    def model_kwargs(self) -> dict[str, Any]:
        """The data-derived constructor arguments of a method."""
        kwargs = {
            "in_chans": self.in_chans,
            "band_names": self.band_names,
            "mean": self.mean,
            "std": self.std,
            "value_scale": self.value_scale,
        }
        if self.natural_spec is not None:
            # num_classes: the natural images' (the natural_images term's); class_names: the land cover's, below
            kwargs["num_classes"] = len(self.natural.classes) if self.streamed else self.dataset.num_classes
            if not self.streamed and self.dataset.rs_target_kind == "proportions":
                kwargs["class_names"] = tuple(self.dataset.rs.classes)
        elif getattr(self.dataset, "target_kind", None) == "proportions":  # land-cover tiles (GeoKR's labels)
            kwargs["num_classes"] = self.dataset.num_classes
            kwargs["class_names"] = tuple(self.dataset.classes)
        return kwargs

    def train_dataloader(self) -> DataLoader:
        if self.streamed:
            return self._streamed_loader()
        trainer = self.trainer
        sampler = StepIndexedBatchSampler(
            len(self.dataset),
            self.batch_size,
            seed=self.seed,
            # The trainer's step is the data position, so a resumed run continues the same order.
            position=(lambda: trainer.global_step) if trainer is not None else (lambda: 0),
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
            name=str(self.spec),
        )
        return DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=batch_as_is,
            # Worker seeds come from this generator, not the global RNG the views draw from.
            generator=torch.Generator().manual_seed(self.seed),
            persistent_workers=self.num_workers > 0,
        )

    def _streamed_loader(self):
        from litdata import ParallelStreamingDataset, StreamingDataLoader

        from rspretrain.data.shards.shard_images import collate_streamed

        if self.dataset.decodes_images and self.dataset.plan is None:
            raise RuntimeError("set_decode_crops() was not called: the view recipe decides the decode-time crops")
        from litdata.utilities.env import _DistributedEnv

        # litdata reads the ranks when a dataset is built; ours are built in setup(), before DDP starts (the model is
        # built from the data), so each rank would read every chunk. Read them again now that the group exists.
        for shards in (self.dataset, self.natural):
            if shards is not None:
                shards.distributed_env = _DistributedEnv.detect()
        dataset = self.dataset
        if self.natural is not None:
            # GeRSP's pairing: one RS and one natural sample per item, the shorter source cycled.
            length = self.epoch_length or max(len(self.dataset), len(self.natural))
            dataset = ParallelStreamingDataset([self.dataset, self.natural], length=length, seed=self.seed)
        return StreamingDataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_streamed,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
            drop_last=True,
            multiprocessing_context=self.worker_context(),
        )

    def worker_context(self) -> str | None:
        """The start method of the streamed loader's workers (None: torch's default, fork on Linux).

        A DDP rank has other threads (the process group's, litdata's chunk readers) that may hold interpreter locks
        when its DataLoader forks workers: on CPython 3.11 such a fork deadlocked a two-rank CI run (the child
        blocked in ``PyOS_AfterFork_Child``). A spawned worker starts a fresh interpreter instead. ``auto`` spawns
        when the run has several ranks and the main module is import-safe (:func:`main_is_import_safe`: the
        ``rspretrain`` command; a spawned child imports the main script again, which re-runs an unguarded one), and
        forks otherwise (saying so once on several ranks) and on one rank, where starting a worker costs less: on EuroSAT shards, 2
        workers, the first epoch took 0.24 s with fork, 4.4 s with spawn and 14.5 s with forkserver (start-up
        included); later epochs are equal, the workers persist (``python benchmarks/worker_start.py``,
        ``benchmarks/results/worker_start_cpu.json``).
        """
        if self.num_workers == 0:
            return None
        if self.worker_start != "auto":
            return self.worker_start
        world = self.trainer.world_size if self.trainer is not None else 1
        if world == 1:
            return None
        if not main_is_import_safe():
            # A spawned worker imports the main script again; without an ``if __name__ == "__main__":`` guard
            # that would start the training a second time, so a user's own script keeps fork unless it asks.
            log.warning("data.worker_start auto: forking the DataLoader workers of a DDP rank (may deadlock on "
                        "CPython 3.11); with an `if __name__ == \"__main__\":` guard in your script, "
                        "--data.worker_start spawn avoids it")
            return None
        return "spawn"
