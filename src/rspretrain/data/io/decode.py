"""Decode many image files (on disk or inside zip archives) into one contiguous ``uint8`` array.

Scene-classification datasets (EuroSAT, UC Merced, AID, NWPU-RESISC45, ...) are small enough to be held in memory
once decoded, and decoding JPEGs is what dominates a data loader's time on a 2-core machine. This module decodes every
image exactly once, with a small thread pool (Pillow releases the GIL while it decodes), into an ``(N, 3, H, W)``
array that :class:`~rspretrain.data.io.in_memory.InMemoryImageDataset` then indexes for every epoch.

Sources are either filesystem paths or :class:`ZipMember` references, read straight from the archive with
:mod:`zipfile` (random access to stored members; nothing is extracted).
"""

from __future__ import annotations

import io
import logging
import os
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from rspretrain.core.errors import DataError

logger = logging.getLogger("rspretrain")

#: Pillow modes whose samples are 8-bit and therefore convert to 8-bit RGB without losing values.
EIGHT_BIT_MODES = frozenset(
    {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
)

#: The largest image (width x height) read: 2**28 pixels (16384 x 16384). Pillow's own decompression-bomb limit (about
#: 89 million, an error at twice that) would abort on some Million-AID images; this explicit limit replaces it (the
#: streamed path's ``data.max_image_pixels``; see :mod:`rspretrain.data.shards.decode_crops`).
DEFAULT_MAX_IMAGE_PIXELS = 2**28


class pixel_limit_off:
    """Pillow's decompression-bomb check off while opening: the caller applies its own pixel limit.

    Pillow's limit is one global; the decoding threads share it, so the first to enter saves it and the last to
    leave restores it (a count under a lock), and no thread restores it while another still needs it off.
    """

    _lock = threading.Lock()
    _depth = 0
    _saved = None

    def __enter__(self):
        with pixel_limit_off._lock:
            if pixel_limit_off._depth == 0:
                pixel_limit_off._saved = Image.MAX_IMAGE_PIXELS
                Image.MAX_IMAGE_PIXELS = None
            pixel_limit_off._depth += 1

    def __exit__(self, *exc):
        with pixel_limit_off._lock:
            pixel_limit_off._depth -= 1
            if pixel_limit_off._depth == 0:
                Image.MAX_IMAGE_PIXELS = pixel_limit_off._saved


#: Images per thread-pool task: large enough to amortise task overhead, small enough to stop soon after an error.
_CHUNK = 64

#: Decoded arrays above this size get a warning suggesting ``image_size`` (e.g. AID at 600x600 is ~10 GiB).
_LARGE_BYTES = 4 * 1024**3


@dataclass(frozen=True)
class ZipMember:
    """One member of a zip archive, read with :mod:`zipfile` without extracting the archive.

    Args:
        archive: path of the ``.zip`` file.
        member: member name inside the archive (``/``-separated, as :meth:`zipfile.ZipFile.namelist` gives it).
    """

    archive: Path
    member: str

    def __str__(self) -> str:
        # "archive.zip:member" is how every error message and ``InMemoryImageDataset.files`` names an image.
        return f"{self.archive}:{self.member}"


#: A decodable image: a file on disk or a member of a zip archive.
ImageSource = Union[Path, ZipMember]


def as_source(source: str | os.PathLike | ZipMember) -> ImageSource:
    """Normalise a path-like or :class:`ZipMember` to an :data:`ImageSource`."""
    if isinstance(source, ZipMember):
        return source
    return Path(source)


@dataclass
class DecodedImages:
    """Result of :func:`decode_images`.

    Attributes:
        array: ``uint8`` array of shape ``(K, 3, H, W)`` holding the images that decoded, in source order.
        kept: for each row of ``array``, its index in the list of sources.
        skipped: the sources (as strings) that could not be decoded and were skipped (``skip_corrupt=True``).
    """

    array: np.ndarray
    kept: list[int]
    skipped: list[str]


class _CorruptImage(Exception):
    """An image whose bytes cannot be decoded; skippable with ``skip_corrupt``."""

    def __init__(self, source: ImageSource, reason: str) -> None:
        super().__init__(f"{source}: cannot decode image ({reason})")
        self.source = source


def open_zip(archive: Path) -> zipfile.ZipFile:
    """Open a zip archive for reading, turning the usual failures into one-line :class:`DataError` messages."""
    try:
        return zipfile.ZipFile(archive)
    except FileNotFoundError:
        raise DataError(f"{archive}: no such file") from None
    except zipfile.BadZipFile as exc:
        raise DataError(f"{archive}: not a valid zip archive ({exc})") from None
    except OSError as exc:
        raise DataError(f"{archive}: cannot open archive ({exc.strerror or exc})") from None


class _Reader:
    """Reads the bytes of sources; opens each zip archive once and shares it between the decoding threads.

    Reads from an archive are serialised with a lock: :class:`zipfile.ZipFile` keeps an unlocked reference count of
    its open members, and reading a stored member takes microseconds next to decoding it (which runs outside the
    lock). One handle per thread would instead parse the central directory once per thread (about half a second for
    EuroSAT's 27,000 members).
    """

    def __init__(self) -> None:
        self._archives: dict[Path, zipfile.ZipFile] = {}
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()

    def _archive(self, path: Path) -> zipfile.ZipFile:
        with self._lock:
            archive = self._archives.get(path)
            if archive is None:
                archive = self._archives[path] = open_zip(path)
            return archive

    def read(self, source: ImageSource) -> bytes:
        if isinstance(source, ZipMember):
            archive = self._archive(source.archive)
            try:
                with self._read_lock:
                    return archive.read(source.member)
            except KeyError:
                raise DataError(f"{source}: member not found in archive") from None
            except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError) as exc:
                # CRC mismatch, truncated archive or unsupported compression: the member's bytes are unusable.
                raise _CorruptImage(source, f"unreadable archive member: {exc}") from None
        try:
            return source.read_bytes()
        except FileNotFoundError:
            raise DataError(f"{source}: no such file") from None
        except OSError as exc:
            raise DataError(f"{source}: cannot read file ({exc.strerror or exc})") from None

    def close(self) -> None:
        with self._lock:
            for archive in self._archives.values():
                archive.close()
            self._archives.clear()


def _decode_one(reader: _Reader, source: ImageSource, image_size: int | None) -> np.ndarray:
    """Decode one image to an ``(H, W, 3)`` uint8 array, resized to ``image_size`` squared when given."""
    data = reader.read(source)
    if not data:
        raise _CorruptImage(source, "empty file")
    try:
        with pixel_limit_off():
            opened = Image.open(io.BytesIO(data))
        with opened:
            width, height = opened.size
            if width * height > DEFAULT_MAX_IMAGE_PIXELS:
                raise DataError(f"{source}: {width}x{height} px is above the in-memory limit of "
                                f"{DEFAULT_MAX_IMAGE_PIXELS} pixels; stream such images (rspretrain prepare, "
                                "data.max_image_pixels)")
            # load() forces the full decode here, so truncated files fail now rather than yielding grey padding.
            with pixel_limit_off():
                opened.load()
            if opened.mode not in EIGHT_BIT_MODES:
                # 16-bit or float images would be clipped to 0..255 by convert("RGB"): a silently wrong result.
                raise DataError(
                    f"{source}: {opened.mode} image (more than 8 bits per sample) cannot be stored as 8-bit RGB "
                    "without losing values; read it with rspretrain.data.read_raster instead"
                )
            image = opened.convert("RGB") if opened.mode != "RGB" else opened
            if image_size is not None and image.size != (image_size, image_size):
                # Pillow's bilinear resize widens its kernel when downscaling, i.e. it is antialiased.
                image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except DataError:
        raise
    except UnidentifiedImageError:
        is_tiff = str(source).lower().endswith((".tif", ".tiff"))
        hint = "; multispectral GeoTIFFs are read with rspretrain.data.read_raster" if is_tiff else ""
        raise _CorruptImage(source, f"not a recognised image format{hint}") from None
    except MemoryError:
        raise
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, ... for bad bytes.
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise _CorruptImage(source, reason) from None


def decode_images(
    sources: Sequence[str | os.PathLike | ZipMember],
    image_size: int | None = None,
    skip_corrupt: bool = False,
    num_threads: int = 2,
) -> DecodedImages:
    """Decode images into one ``(N, 3, H, W)`` uint8 array with Pillow (``convert("RGB")``).

    Args:
        sources: image files or zip members, in the order the rows of the array should have.
        image_size: if given, every image is resized to ``image_size x image_size`` (bilinear, antialiased when
            downscaling; non-square images are stretched). If None, all images must have the same size.
        skip_corrupt: skip images that cannot be decoded (truncated, empty, not an image) instead of raising; they
            are listed in :attr:`DecodedImages.skipped` and a warning with their count is logged.
        num_threads: decoding threads (Pillow releases the GIL while decoding).

    Returns:
        The decoded array, the indices of the sources it holds and the skipped sources.

    Raises:
        DataError: a file or archive member is missing; an image cannot be decoded (unless ``skip_corrupt``); sizes
            differ while ``image_size`` is None; an image has more than 8 bits per sample; every image is corrupt.
    """
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
    items = [as_source(s) for s in sources]
    if not items:
        raise ValueError("decode_images() needs at least one source")
    # Pillow's global tolerance would turn truncated files into partly grey images without any error.
    ImageFile.LOAD_TRUNCATED_IMAGES = False

    skipped: dict[int, str] = {}

    def corrupt(index: int, error: _CorruptImage) -> None:
        if not skip_corrupt:
            raise DataError(str(error)) from None
        skipped[index] = str(error.source)

    reader = _Reader()
    try:
        # The first decodable image fixes the array's H and W, so the array can be allocated once.
        first_index, first = 0, None
        while first is None and first_index < len(items):
            try:
                first = _decode_one(reader, items[first_index], image_size)
            except _CorruptImage as error:
                corrupt(first_index, error)
                first_index += 1
        if first is None:
            raise DataError(f"{items[0]}: none of the {len(items)} images could be decoded (all skipped as corrupt)")
        height, width = first.shape[:2]
        array = np.empty((len(items), 3, height, width), dtype=np.uint8)
        if array.nbytes > _LARGE_BYTES:
            logger.warning(
                "decoding %d images of %dx%d px needs %.1f GiB of memory; pass image_size to store them smaller",
                len(items), width, height, array.nbytes / 1024**3,
            )
        array[first_index] = first.transpose(2, 0, 1)

        def work(chunk: range) -> list[tuple[int, _CorruptImage]]:
            failures = []
            for index in chunk:
                try:
                    decoded = _decode_one(reader, items[index], image_size)
                except _CorruptImage as error:
                    failures.append((index, error))
                    continue
                if decoded.shape[:2] != (height, width):
                    raise DataError(
                        f"{items[index]}: image is {decoded.shape[1]}x{decoded.shape[0]} px but {items[first_index]} "
                        f"is {width}x{height} px; pass image_size to resize all images to one size"
                    )
                array[index] = decoded.transpose(2, 0, 1)
            return failures

        rest = range(first_index + 1, len(items))
        chunks = [rest[i : i + _CHUNK] for i in range(0, len(rest), _CHUNK)]
        pool = ThreadPoolExecutor(max_workers=max(1, num_threads), thread_name_prefix="rspretrain-decode")
        try:
            # map() yields in submission order, so the first failing image (in source order) is the one reported.
            for failures in pool.map(work, chunks):
                for index, error in failures:
                    corrupt(index, error)
        except BaseException:
            # Do not keep decoding thousands of queued images after an error.
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    finally:
        reader.close()

    kept = [i for i in range(len(items)) if i not in skipped]
    if skipped:
        array = array[kept]  # fancy indexing returns a compact copy without the skipped rows
        logger.warning(
            "skipped %d of %d images that could not be decoded (first: %s)",
            len(skipped), len(items), skipped[min(skipped)],
        )
    return DecodedImages(array=array, kept=kept, skipped=[skipped[i] for i in sorted(skipped)])
