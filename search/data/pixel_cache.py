"""Decoded images on disk: every image of a data set decoded once per size, then memory-mapped by every reader.

One folder per (data fingerprint, items, image size, decoding) under `<cache-dir>/decoded` holds
`images.npy`, uint8 [decoded items, 3, S, S] in source order, and `items.npy`, which source items
decoded; both shared the way search.data.shared_files shares files. A second run, another worker on
this machine, another study of the same images and the test evaluation read them instead of
decoding, and a data set larger than memory is read from them a batch at a time.
"""

from __future__ import annotations

import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from search.data.decode import decode_image
from search.data.shared_files import folder_name, key_record, locked, publish, read_vouched, temporary
from search.data.sources import ImageSource
from search.errors import UserError
from search.progress import progress_bar

log = logging.getLogger(__name__)

DECODING = "exif-upright RGB, shorter side bilinear, centre crop; v1"  # change when decode_image changes pixels
IMAGES_FILE = "images.npy"
ITEMS_FILE = "items.npy"
CHUNK = 256  # items decoded between two progress updates; also the rows copied at once when compacting
MAX_BAD_FRACTION = 0.5  # beyond this many unreadable images the folder is wrong, not a few files
DISK_MARGIN = 1.1  # free space asked for beyond the images themselves (the items file, the file system)


@dataclass(frozen=True)
class PixelKey:
    """What decoded pixels depend on; a change in any of them means other pixels."""

    fingerprint: str  # of the data's items, labels and file sizes
    items: int
    image_size: int
    decoding: str = DECODING

    def record(self) -> dict[str, object]:
        return key_record(asdict(self))


@dataclass(frozen=True)
class DecodedImages:
    """The readable items of a source, decoded: images in source order, which items they are, why others are not."""

    images: np.ndarray  # uint8 [decoded items, 3, S, S]: memory-mapped when read from the cache
    good: np.ndarray  # bool per source item
    unreadable: list[str]  # "<item>: <reason>" per item that could not be decoded


def decode_item(source: ImageSource, index: int, size: int) -> np.ndarray | str:
    """The item as a CHW uint8 array, or the reason it could not be read."""
    try:
        with source.decode(index) as image:
            return decode_image(image, size)
    except Exception as exc:
        return f"{source.keys[index]}: {exc}"


def decoding_threads() -> int:
    """All the cores this process may use: PIL releases the GIL while it decodes and resizes."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def decode_all(source: ImageSource, image_size: int, out: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Decode every item into out[item] on all cores, with a progress bar; return the decoded mask and the reasons."""
    good = np.zeros(len(source), dtype=bool)
    reasons: list[str] = []
    with (
        ThreadPoolExecutor(max_workers=decoding_threads()) as pool,
        progress_bar(f"decoding {len(source)} images at {image_size}px", len(source)) as advance,
    ):
        for start in range(0, len(source), CHUNK):
            indices = range(start, min(start + CHUNK, len(source)))
            for index, decoded in zip(
                indices, pool.map(lambda i: decode_item(source, i, image_size), indices), strict=True
            ):
                if isinstance(decoded, str):
                    reasons.append(decoded)
                else:
                    out[index] = decoded
                    good[index] = True
            advance(len(indices))
    check_readable(source, int(good.sum()), reasons)
    return good, reasons


def check_readable(source: ImageSource, readable: int, bad: list[str]) -> None:
    """Warn about skipped files; refuse a set that is mostly unreadable (the wrong folder, not a few files)."""
    total = readable + len(bad)
    if len(bad) > MAX_BAD_FRACTION * total:
        raise UserError(
            f"{len(bad)} of {total} images in {source.name} could not be read (e.g. {bad[0]}); fix or remove them"
        )
    if bad:
        log.warning("skipped %d unreadable images of %d (e.g. %s)", len(bad), total, bad[0])


def cached_images(source: ImageSource, *, image_size: int, root: Path) -> DecodedImages:
    """The source decoded at `image_size`, from the cache under `root`, decoding (once, under a lock) when absent."""
    key = PixelKey(source.fingerprint(), len(source), image_size)
    folder = root / "decoded" / folder_name(f"{image_size}px", key.record())
    with locked(folder, "decoded-image cache"):
        found = _read(folder, key, source)
        if found is None:
            return _fill(folder, key, source)
    if found.unreadable:
        log.warning("skipping %d images that could not be read when they were decoded", len(found.unreadable))
    return found


def _read(folder: Path, key: PixelKey, source: ImageSource) -> DecodedImages | None:
    items = read_vouched(folder / ITEMS_FILE, key.record(), rows=key.items)
    if items is None:
        return None
    good = np.asarray(items, dtype=bool)
    images = read_vouched(folder / IMAGES_FILE, key.record(), rows=int(good.sum()))
    if images is None:
        return None
    unreadable = [f"{source.keys[i]}: could not be decoded" for i in np.flatnonzero(~good)]
    return DecodedImages(images=images, good=good, unreadable=unreadable)


def _fill(folder: Path, key: PixelKey, source: ImageSource) -> DecodedImages:
    """Decode into a temporary file, drop the unreadable rows, publish, and map the published file."""
    shape = (key.items, 3, key.image_size, key.image_size)
    needed = int(np.prod(shape)) * DISK_MARGIN
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise UserError(
            f"decoded images need {needed / 2**30:.1f} GiB and {folder} has {free / 2**30:.1f} GiB free; "
            "free space or pass --cache-dir on a larger disk"
        )
    written = temporary(folder, IMAGES_FILE)
    compacted = temporary(folder, IMAGES_FILE)
    items = temporary(folder, ITEMS_FILE)
    try:
        images = np.lib.format.open_memmap(written, mode="w+", dtype=np.uint8, shape=shape)
        good, reasons = decode_all(source, key.image_size, images)
        if not good.all():  # keep the decoded rows only, so that every reader can map the file as it is
            positions = np.flatnonzero(good)
            kept = np.lib.format.open_memmap(compacted, mode="w+", dtype=np.uint8, shape=(len(positions), *shape[1:]))
            for start in range(0, len(positions), CHUNK):
                kept[start : start + CHUNK] = images[positions[start : start + CHUNK]]
            kept.flush()
            del kept
            written, compacted = compacted, written
        images.flush()
        del images
        publish(written, folder / IMAGES_FILE, key.record())
        np.save(items, good)
        publish(items, folder / ITEMS_FILE, key.record())
    finally:
        for token in (written, compacted, items):
            token.unlink(missing_ok=True)
    # just written and checksummed under the lock: mapped as is, not hashed a second time
    return DecodedImages(images=np.load(folder / IMAGES_FILE, mmap_mode="c"), good=good, unreadable=reasons)
