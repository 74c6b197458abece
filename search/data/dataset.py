"""The decoded, split dataset every trial of a study trains on.

Images are decoded once, into the on-disk decoded-image cache, at the study's image size (resize the
shorter side, centre crop), and held as one uint8 tensor (memory-mapped when they exceed the memory
budget), so trials never touch image files. The split is stratified and seeded, and it
is stored on the study so that a resumed run or another worker trains on exactly the same split.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from search.data.pixel_cache import cached_images, decode_all
from search.data.sources import TEST, TRAIN, UNASSIGNED, VAL, ImageSource
from search.errors import UserError

log = logging.getLogger(__name__)

SPLIT_CODES = "tvs"  # train, val, test: one character per item in the stored split
VAL_FRACTION = 0.15  # enough validation images to rank trials, most left to train on
TEST_FRACTION = 0.15  # held out for the best configuration only
MEMORY_BUDGET_BYTES = 8 * 2**30  # decoded images held in memory up to this; above it they are read from disk


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

    def labels_of(self, which: int) -> np.ndarray:
        """The labels of one split (TRAIN, VAL or TEST), in dataset order: held whether or not the images are."""
        return self.labels.numpy()[self.split == which]

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


def decoded_batches(
    source: ImageSource, *, image_size: int, cache_dir: Path, batch_size: int = 256
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """The readable items a batch at a time, from the decoded-image cache (filled first when absent).

    Yields (source indices of the batch, their images). Only one batch is in memory at once, so a
    folder of any size streams; unreadable items were reported when the cache was filled.
    """
    decoded = cached_images(source, image_size=image_size, root=cache_dir)
    positions = np.flatnonzero(decoded.good)
    for start in range(0, len(positions), batch_size):
        images = torch.from_numpy(np.ascontiguousarray(decoded.images[start : start + batch_size]))
        yield positions[start : start + batch_size], images


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


def decode_source(source: ImageSource, *, image_size: int, cache_dir: Path | None = None) -> Dataset:
    """Every readable image decoded, unreadable ones skipped with a warning.

    With `cache_dir`, through the on-disk decoded-image cache: held in memory when they fit
    MEMORY_BUDGET_BYTES, read from the memory-mapped file a batch at a time when they do not. Without
    one (benchmarks, tests), decoded into memory, and refused above the budget.
    """
    warn_ignored(source)
    if cache_dir is not None:
        decoded = cached_images(source, image_size=image_size, root=cache_dir)
        if decoded.images.nbytes <= MEMORY_BUDGET_BYTES:
            images = torch.from_numpy(np.array(decoded.images))
        else:
            log.info(
                "%.1f GiB of decoded images exceed the %d GiB memory budget: training reads them from %s",
                decoded.images.nbytes / 2**30,
                MEMORY_BUDGET_BYTES // 2**30,
                cache_dir,
            )
            images = torch.from_numpy(decoded.images)
        return dataset_of(source, decoded.good, images, image_size=image_size)
    needed = len(source) * 3 * image_size * image_size
    if needed > MEMORY_BUDGET_BYTES:
        raise UserError(
            f"{len(source)} images at {image_size}px need {needed / 2**30:.1f} GiB in memory; "
            "pass a smaller --image-size"
        )
    everything = np.zeros((len(source), 3, image_size, image_size), dtype=np.uint8)
    good, _ = decode_all(source, image_size, everything)
    kept = everything if good.all() else everything[good]  # no second copy of every image when all decoded
    return dataset_of(source, good, torch.from_numpy(kept), image_size=image_size)


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
