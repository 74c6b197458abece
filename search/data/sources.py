"""Where labelled images come from: bundled digits, an image folder, or a torchvision dataset.

A source lists its items and knows how to decode one; it does no resizing and no splitting,
so that the same source can be fingerprinted before any pixel is read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from search.data.downloads import network_timeout
from search.errors import UserError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
SPLIT_FOLDERS = {"train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}
TRAIN, VAL, TEST, UNASSIGNED = 0, 1, 2, -1
TORCHVISION_DATASETS = ("cifar10", "cifar100", "mnist", "fashion_mnist")


@dataclass(frozen=True)
class ImageSource:
    """Labelled images before decoding: names, labels, an optional given split, a decoder."""

    name: str
    class_names: tuple[str, ...]
    keys: tuple[str, ...]  # stable per-item ids: relative paths or "<name>/<index>"
    labels: np.ndarray  # int64 class index per item
    given_split: np.ndarray  # TRAIN/VAL/TEST per item, UNASSIGNED where the source has none
    decode: Callable[[int], Image.Image]
    content_marks: tuple[str, ...] = ()  # per-item cheap content marks (file sizes) for the fingerprint
    ignored_files: tuple[str, ...] = ()  # files skipped because they are not images

    def __len__(self) -> int:
        return len(self.keys)

    def fingerprint(self) -> str:
        """A hash of class names, item ids, labels and content marks: changes when the data does."""
        digest = hashlib.sha256()
        digest.update("\x1f".join(self.class_names).encode())
        for i, key in enumerate(self.keys):
            mark = self.content_marks[i] if self.content_marks else ""
            digest.update(f"\x1e{key}\x1f{int(self.labels[i])}\x1f{mark}".encode())
        return digest.hexdigest()[:16]


def open_source(data: str, *, root: Path, classes: Sequence[str] | None = None) -> ImageSource:
    """Resolve `--data` ('digits', a torchvision dataset name, or a folder path), keeping only `classes` if given."""
    source = _open_all(data, root=root)
    return source if not classes else select_classes(source, classes)


def _open_all(data: str, *, root: Path) -> ImageSource:
    if data == "digits":
        return _digits_source()
    if data.lower() in TORCHVISION_DATASETS:
        return _torchvision_source(data.lower(), root)
    path = Path(data).expanduser()
    if not path.exists():
        raise UserError(
            f"data '{data}' is not a folder that exists; pass --data digits, a torchvision name "
            f"({', '.join(TORCHVISION_DATASETS)}) or a folder with one sub-folder per class"
        )
    if not path.is_dir():
        raise UserError(f"data '{data}' is a file; pass a folder with one sub-folder per class")
    return _folder_source(path)


def select_classes(source: ImageSource, names: Sequence[str]) -> ImageSource:
    """Only the items of the named classes, relabelled in the source's class order (--classes).

    One source can so play both sides of a transfer: digits 0-4 to train on, digits 5-9 to transfer to.
    """
    unknown = [n for n in names if n not in source.class_names]
    if unknown:
        raise UserError(
            f"--classes names {', '.join(repr(n) for n in unknown)}, which {source.name} does not have; "
            f"its classes are {', '.join(source.class_names)}"
        )
    wanted = set(names)
    kept_classes = tuple(c for c in source.class_names if c in wanted)
    if len(kept_classes) < 2:
        raise UserError(f"--classes keeps {len(kept_classes)} class; a classifier needs at least two")
    old_to_new = {source.class_names.index(c): i for i, c in enumerate(kept_classes)}
    kept = np.flatnonzero(np.isin(source.labels, list(old_to_new)))
    decode = source.decode
    return ImageSource(
        name=f"{source.name}[{','.join(kept_classes)}]",
        class_names=kept_classes,
        keys=tuple(source.keys[i] for i in kept),
        labels=np.asarray([old_to_new[int(label)] for label in source.labels[kept]], dtype=np.int64),
        given_split=source.given_split[kept],
        decode=lambda i: decode(int(kept[i])),
        content_marks=tuple(source.content_marks[i] for i in kept) if source.content_marks else (),
        ignored_files=source.ignored_files,
    )


def _digits_source() -> ImageSource:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 ink -> 0..255
    labels = bunch.target.astype(np.int64)
    return ImageSource(
        name="digits",
        class_names=tuple(str(c) for c in bunch.target_names),
        keys=tuple(f"digits/{i}" for i in range(len(labels))),
        labels=labels,
        given_split=np.full(len(labels), UNASSIGNED, dtype=np.int8),
        decode=lambda i: Image.fromarray(pixels[i], mode="L"),
    )


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _folder_source(root: Path) -> ImageSource:
    """One sub-folder per class, or train/val[/test] sub-folders each holding class folders."""
    subfolders = _class_folders(root)
    split_dirs = {p: SPLIT_FOLDERS[p.name.lower()] for p in subfolders if p.name.lower() in SPLIT_FOLDERS}
    if split_dirs and not any(s == TRAIN for s in split_dirs.values()):
        raise UserError(f"{root} has {', '.join(p.name for p in split_dirs)} but no train/ folder")
    strays = [p.name for p in subfolders if p not in split_dirs]
    if split_dirs and strays:
        raise UserError(
            f"{root} mixes split folders ({', '.join(p.name for p in split_dirs)}) with other folders "
            f"({', '.join(strays)}); move class folders inside train/ (and val/, test/)"
        )
    if split_dirs:
        train_dir = next(p for p, s in split_dirs.items() if s == TRAIN)
        class_names = tuple(p.name for p in _class_folders(train_dir))
        layout = [(p, s) for p, s in split_dirs.items()]
    else:
        class_names = tuple(p.name for p in subfolders)
        layout = [(root, UNASSIGNED)]
    if not class_names:
        loose = [p.name for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        hint = f" (found {len(loose)} loose images)" if loose else ""
        raise UserError(
            f"{root} has no class sub-folders{hint}; put each class's images in a sub-folder named after it"
        )
    if len(class_names) < 2:
        raise UserError(
            f"{root} holds only one class ('{class_names[0]}'); a classifier needs at least two class sub-folders"
        )
    class_index = {name: i for i, name in enumerate(class_names)}
    files: list[Path] = []
    labels: list[int] = []
    given: list[int] = []
    ignored: list[str] = []
    for split_root, split in layout:
        for class_dir in _class_folders(split_root):
            if class_dir.name not in class_index:
                raise UserError(
                    f"{class_dir} is a class that {split_root.parent / 'train'} does not have; "
                    "every split must use the train/ classes"
                )
            found = sorted(p for p in class_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
            images = [p for p in found if p.suffix.lower() in IMAGE_SUFFIXES]
            ignored += [str(p.relative_to(root)) for p in found if p.suffix.lower() not in IMAGE_SUFFIXES]
            if not images:
                raise UserError(
                    f"class folder {class_dir} holds no images ({'/'.join(sorted(IMAGE_SUFFIXES))}); "
                    "add images or remove the folder"
                )
            files += images
            labels += [class_index[class_dir.name]] * len(images)
            given += [split] * len(images)
    return ImageSource(
        name=str(root),
        class_names=class_names,
        keys=tuple(str(p.relative_to(root)) for p in files),
        labels=np.asarray(labels, dtype=np.int64),
        given_split=np.asarray(given, dtype=np.int8),
        decode=lambda i: Image.open(files[i]),
        content_marks=tuple(str(p.stat().st_size) for p in files),
        ignored_files=tuple(ignored),
    )


def _torchvision_source(name: str, root: Path) -> ImageSource:
    """A torchvision dataset under `root`: used as is when present, downloaded when the network allows."""
    import torchvision.datasets as tvd

    factory = {
        "cifar10": tvd.CIFAR10,
        "cifar100": tvd.CIFAR100,
        "mnist": tvd.MNIST,
        "fashion_mnist": tvd.FashionMNIST,
    }[name]
    parts = []
    for train in (True, False):
        try:
            parts.append(factory(str(root), train=train, download=False))
        except RuntimeError:
            try:
                with network_timeout():
                    parts.append(factory(str(root), train=train, download=True))
            except Exception as exc:
                raise UserError(
                    f"{name} is not under {root} and could not be downloaded ({type(exc).__name__}); "
                    f"without network, copy it there (see torchvision.datasets) or pass --data FOLDER"
                ) from None
    arrays = [np.asarray(p.data) for p in parts]
    pixels = np.concatenate(arrays)
    labels = np.concatenate([np.asarray(p.targets, dtype=np.int64) for p in parts])
    given = np.concatenate([np.full(len(a), s, dtype=np.int8) for a, s in zip(arrays, (UNASSIGNED, TEST), strict=True)])
    mode = "RGB" if pixels.ndim == 4 else "L"
    return ImageSource(
        name=name,
        class_names=tuple(parts[0].classes),
        keys=tuple(f"{name}/{i}" for i in range(len(labels))),
        labels=labels,
        given_split=given,
        decode=lambda i: Image.fromarray(pixels[i], mode=mode),
    )


def class_counts(labels: Sequence[int] | np.ndarray, n_classes: int) -> list[int]:
    """Images per class, in class order."""
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).tolist()
