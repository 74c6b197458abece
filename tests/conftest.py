"""Shared fixtures: tiny real data (bundled digits, generated image folders) and the real backbone."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from search.data.dataset import Dataset, decode_source, stratified_split
from search.data.sources import open_source
from search.models.backbones import Backbone, create_backbone
from tests.helpers import MYPY, start_mypy

SHAPES = ("disc", "bar", "cross")


def draw(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A noisy RGB image of a simple shape, so that classes are learnable but not identical."""
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    jitter = rng.uniform(-0.1, 0.1, 2)
    yy, xx = yy + jitter[0], xx + jitter[1]
    mask = {"disc": xx**2 + yy**2 < 0.09, "bar": np.abs(yy) < 0.12, "cross": (np.abs(xx) < 0.08) | (np.abs(yy) < 0.08)}[
        shape
    ]
    image = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
    image[mask] = rng.integers(180, 255, 3)
    return image


def write_image_folder(
    root: Path,
    *,
    classes: tuple[str, ...] = SHAPES,
    per_class: int = 12,
    seed: int = 0,
    split_dirs: tuple[str, ...] = (),
) -> Path:
    """Class sub-folders of generated images in mixed formats, modes and sizes."""
    rng = np.random.default_rng(seed)
    formats = [("png", "RGB"), ("jpg", "RGB"), ("png", "L"), ("bmp", "RGB"), ("webp", "RGB"), ("png", "RGBA")]
    for split in split_dirs or ("",):
        for index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                suffix, mode = formats[i % len(formats)]
                size = int(rng.integers(24, 48))
                Image.fromarray(draw(SHAPES[index % len(SHAPES)], size, rng)).convert(mode).save(
                    folder / f"{name}_{i}.{suffix}"
                )
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "shapes")


@pytest.fixture(scope="session")
def backbone() -> Backbone:
    return create_backbone("efficientnet_lite0")


@pytest.fixture(scope="session")
def digits() -> Dataset:
    """All 1,797 bundled digits at 32 px with the study split (seed 0)."""
    data = decode_source(open_source("digits", root=Path("studies/datasets")), image_size=32)
    return dataclasses.replace(data, split=stratified_split(data.labels.numpy(), data.split, data.class_names, seed=0))


@pytest.fixture(scope="session")
def small_digits(digits: Dataset) -> Dataset:
    """A few hundred digits: enough to learn, small enough for a unit test."""
    keep = np.random.default_rng(0).permutation(len(digits.labels))[:400]
    keep.sort()
    return dataclasses.replace(digits, images=digits.images[keep], labels=digits.labels[keep], split=digits.split[keep])


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start mypy as soon as the suite knows it will run it: test_mypy then only collects its verdict."""
    if any(item.nodeid.endswith("test_code_quality.py::test_mypy") for item in items):
        config.stash[MYPY] = start_mypy()


def pytest_unconfigure(config: pytest.Config) -> None:
    checker = config.stash.get(MYPY, None)
    if checker is not None and checker.poll() is None:  # the run stopped before test_mypy
        checker.kill()
        checker.wait()
