"""The decoded, split dataset every trial of a study trains on.

Images are decoded once per process into one uint8 tensor at the study's image size (resize the
shorter side, centre crop), so trials never touch files. The split is stratified and seeded, and it
is stored on the study so that a resumed run or another worker trains on exactly the same split.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import torch

from search.data.decode import decode_image
from search.data.sources import TEST, TRAIN, UNASSIGNED, VAL, ImageSource
from search.errors import UserError

log = logging.getLogger(__name__)

SPLIT_CODES = "tvs"  # train, val, test: one character per item in the stored split
VAL_FRACTION = 0.15  # enough validation images to rank trials, most left to train on
TEST_FRACTION = 0.15  # held out for the best configuration only
MAX_BAD_FRACTION = 0.5  # beyond this many unreadable images the folder is wrong, not a few files
MEMORY_BUDGET_BYTES = 8 * 2**30  # decoded images live in memory; above this, ask for a smaller size


@dataclass(frozen=True)
class Dataset:
    """Decoded images, labels and the study's split; built once per process, shared by trials."""

    name: str
    class_names: tuple[str, ...]
    images: torch.Tensor  # uint8 [N, 3, S, S]
    labels: torch.Tensor  # int64 [N]
    split: np.ndarray  # int8 TRAIN/VAL/TEST per item
    fingerprint: str
    keys: tuple[str, ...] = ()  # the source's item ids, to tell which items another study's network saw

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def part(self, which: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of one split (TRAIN, VAL or TEST)."""
        if len(self.images) != len(self.labels):  # labels only: the images were streamed, never held
            raise UserError(f"the images of {self.name} are not held in memory; decode them with decode_source")
        index = torch.from_numpy(np.flatnonzero(self.split == which))
        return self.images[index], self.labels[index]

    def split_counts(self) -> dict[str, int]:
        return {
            name: int((self.split == code).sum()) for name, code in (("train", TRAIN), ("val", VAL), ("test", TEST))
        }

    def encoded_split(self) -> str:
        return "".join(SPLIT_CODES[s] for s in self.split)

    def with_split(self, encoded: str) -> Dataset:
        """The same images with a split restored from the study."""
        if len(encoded) != len(self.labels):
            raise UserError("the split stored on the study does not match this data; use a new --study-name")
        return replace(self, split=np.asarray([SPLIT_CODES.index(c) for c in encoded], dtype=np.int8))


def _decode(source: ImageSource, index: int, size: int) -> np.ndarray | str:
    """The item as a CHW uint8 array, or the reason it could not be read."""
    try:
        with source.decode(index) as image:
            return decode_image(image, size)
    except Exception as exc:
        return f"{source.keys[index]}: {exc}"


def decoded_batches(
    source: ImageSource, *, image_size: int, batch_size: int = 256, threads: int = 4
) -> Iterator[tuple[np.ndarray, torch.Tensor, list[str]]]:
    """Decode the items in order, a batch at a time: (indices of the readable ones, their images, reasons for the rest).

    Only one batch is in memory at once, so a features study can stream a folder of any size.
    """
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for start in range(0, len(source), batch_size):
            indices = range(start, min(start + batch_size, len(source)))
            decoded = list(pool.map(lambda i: _decode(source, i, image_size), indices))
            good = [i for i, d in zip(indices, decoded, strict=True) if not isinstance(d, str)]
            arrays = [d for d in decoded if not isinstance(d, str)]
            images = torch.from_numpy(np.stack(arrays)) if arrays else torch.zeros(0, 3, image_size, image_size)
            yield np.asarray(good, dtype=np.int64), images.to(torch.uint8), [d for d in decoded if isinstance(d, str)]


def check_readable(source: ImageSource, readable: int, bad: list[str]) -> None:
    """Warn about skipped files; refuse a set that is mostly unreadable (the wrong folder, not a few files)."""
    total = readable + len(bad)
    if len(bad) > MAX_BAD_FRACTION * total:
        raise UserError(
            f"{len(bad)} of {total} images in {source.name} could not be read (e.g. {bad[0]}); fix or remove them"
        )
    if bad:
        log.warning("skipped %d unreadable images of %d (e.g. %s)", len(bad), total, bad[0])


def dataset_of(source: ImageSource, good: np.ndarray, images: torch.Tensor | None, *, image_size: int) -> Dataset:
    """The Dataset of the readable items (`good`: a mask over the source); images None: not held in memory."""
    kept = replace(
        source,
        keys=tuple(k for k, ok in zip(source.keys, good, strict=True) if ok),
        labels=source.labels[good],
        given_split=source.given_split[good],
        content_marks=tuple(m for m, ok in zip(source.content_marks, good, strict=True) if ok)
        if source.content_marks
        else (),
    )
    return Dataset(
        name=source.name,
        class_names=source.class_names,
        images=images if images is not None else torch.zeros(0, 3, image_size, image_size, dtype=torch.uint8),
        labels=torch.from_numpy(kept.labels),
        split=kept.given_split.copy(),
        fingerprint=kept.fingerprint(),
        keys=kept.keys,
    )


def warn_ignored(source: ImageSource) -> None:
    if source.ignored_files:
        log.warning(
            "ignored %d files that are not images (e.g. %s)", len(source.ignored_files), source.ignored_files[0]
        )


def decode_source(source: ImageSource, *, image_size: int, threads: int = 4) -> Dataset:
    """Decode every image once into memory; skip unreadable ones with a warning."""
    needed = len(source) * 3 * image_size * image_size
    if needed > MEMORY_BUDGET_BYTES:
        raise UserError(
            f"{len(source)} images at {image_size}px need {needed / 2**30:.1f} GiB in memory; "
            "pass a smaller --image-size (or use --space features, which streams them)"
        )
    warn_ignored(source)
    good = np.zeros(len(source), dtype=bool)
    chunks, bad = [], []
    for indices, images, reasons in decoded_batches(source, image_size=image_size, threads=threads):
        good[indices] = True
        chunks.append(images)
        bad += reasons
    check_readable(source, int(good.sum()), bad)
    return dataset_of(source, good, torch.cat(chunks), image_size=image_size)


def stratified_split(
    labels: np.ndarray,
    given: np.ndarray,
    class_names: tuple[str, ...],
    *,
    seed: int,
    keep_in_train: np.ndarray | None = None,
) -> np.ndarray:
    """TRAIN/VAL/TEST per item: the given split where there is one, val and test carved from the rest.

    Each carved part takes its fraction of each class's pool (at least one image), so every class
    appears in every split and the fractions hold for the whole set. Items marked `keep_in_train`
    (seen in training by a network this study transfers) are never carved into val or test.
    """
    split = np.where(given == UNASSIGNED, TRAIN, given).astype(np.int8)
    carve = [
        (part, fraction) for part, fraction in ((VAL, VAL_FRACTION), (TEST, TEST_FRACTION)) if not (given == part).any()
    ]
    pool = np.flatnonzero(split == TRAIN)
    if keep_in_train is not None:
        pool = pool[~keep_in_train[pool]]
    counts = np.bincount(labels[pool], minlength=len(class_names))
    needed = 1 + len(carve)
    short = [(class_names[c], int(n)) for c, n in enumerate(counts) if n < needed]
    if short:
        name, count = short[0]
        parts = "/".join(["train", *("val" if part == VAL else "test" for part, _ in carve)])
        raise UserError(
            f"class '{name}' has {count} training image(s){' the transferred trial did not train on' if keep_in_train is not None else ''}; "
            f"each class needs at least {needed} (one each for {parts}): add images or remove the class"
        )
    rng = np.random.default_rng(seed)
    for cls in range(len(class_names)):
        members = rng.permutation(pool[labels[pool] == cls])
        start = 0
        for part, fraction in carve:
            take = max(1, round(fraction * len(members)))
            split[members[start : start + take]] = part
            start += take
    return split
