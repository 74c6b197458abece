"""The decoded-image cache: images decoded once, read back identically, rebuilt when damaged, streamed when large."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from PIL import Image

from search.cli.run import main
from search.data import dataset as dataset_module
from search.data.dataset import decode_source
from search.data.decode import decode_image_file
from search.data.pixel_cache import IMAGES_FILE, cached_images
from search.data.sources import ImageSource, open_source
from search.study.evaluation import stored_test_part
from tests.conftest import write_image_folder
from tests.helpers import FAST

SIZE = 32


def counting(source: ImageSource) -> tuple[ImageSource, list[int]]:
    """The source, and a list that grows by one item per image it decodes."""
    calls: list[int] = []
    decode = source.decode

    def counted(index: int) -> Image.Image:
        calls.append(index)
        return decode(index)

    return dataclasses.replace(source, decode=counted), calls


def test_a_second_read_decodes_nothing_and_gives_the_same_pixels(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "shapes", per_class=6)
    source, calls = counting(open_source(str(folder), root=folder))
    first = cached_images(source, image_size=SIZE, root=tmp_path / "cache")
    assert sorted(calls) == list(range(len(source)))
    calls.clear()
    second = cached_images(source, image_size=SIZE, root=tmp_path / "cache")
    assert calls == []
    assert np.array_equal(first.images, second.images) and second.good.all()
    expected = decode_image_file(folder / source.keys[3], SIZE)
    assert np.array_equal(second.images[3], expected)  # what predict decodes from the file, pixel for pixel
    other_size = cached_images(source, image_size=SIZE + 32, root=tmp_path / "cache")
    assert other_size.images.shape[-1] == SIZE + 32 and len(calls) == len(source)


def test_unreadable_items_are_left_out_and_remembered(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "shapes", per_class=6)
    broken = sorted(folder.rglob("*.jpg"))[0]
    broken.write_bytes(b"not a picture")
    source, calls = counting(open_source(str(folder), root=folder))
    first = cached_images(source, image_size=SIZE, root=tmp_path / "cache")
    assert (~first.good).sum() == 1 and len(first.images) == len(source) - 1
    assert str(broken.relative_to(folder)) in first.unreadable[0]
    calls.clear()
    again = cached_images(source, image_size=SIZE, root=tmp_path / "cache")
    assert calls == [] and np.array_equal(again.good, first.good)
    data = decode_source(source, image_size=SIZE, cache_dir=tmp_path / "cache")
    assert len(data.images) == len(data.labels) == len(source) - 1


def test_a_damaged_file_is_decoded_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = write_image_folder(tmp_path / "shapes", per_class=4)
    source, calls = counting(open_source(str(folder), root=folder))
    first = np.array(cached_images(source, image_size=SIZE, root=tmp_path / "cache").images)
    (images_file,) = (tmp_path / "cache" / "decoded").glob(f"*/{IMAGES_FILE}")
    damaged = bytearray(images_file.read_bytes())
    damaged[-1] ^= 0xFF
    images_file.write_bytes(bytes(damaged))
    calls.clear()
    with caplog.at_level(logging.WARNING):
        rebuilt = cached_images(source, image_size=SIZE, root=tmp_path / "cache")
    assert len(calls) == len(source) and "rebuilding" in caplog.text
    assert np.array_equal(rebuilt.images, first)


def test_images_beyond_the_memory_budget_are_read_from_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    folder = write_image_folder(tmp_path / "shapes", per_class=4)
    source = open_source(str(folder), root=folder)
    held = decode_source(source, image_size=SIZE, cache_dir=tmp_path / "cache")
    monkeypatch.setattr(dataset_module, "MEMORY_BUDGET_BYTES", 1000)
    with caplog.at_level(logging.INFO):
        streamed = decode_source(source, image_size=SIZE, cache_dir=tmp_path / "cache")
    assert "memory budget" in caplog.text
    assert torch.equal(streamed.images, held.images)
    with pytest.raises(Exception, match="smaller --image-size"):
        decode_source(source, image_size=SIZE)  # without a cache there is nowhere to stream from


@pytest.mark.parametrize("space", ["finetune", "features"])
def test_a_second_run_of_a_study_decodes_nothing(tmp_path: Path, space: str) -> None:
    """After the first run every image file is overwritten with junk of the same size (the data's
    fingerprint is unchanged): a second run, and its test evaluation, can only succeed from the cache."""
    folder = write_image_folder(tmp_path / "shapes", per_class=8)
    args = ["--space", space, "--data", str(folder), *FAST, "--max-epochs", "1", "--study-name", "twice"]
    args += ["--storage", f"sqlite:///{tmp_path / 'optuna.db'}", "--artifact-dir", str(tmp_path / "artifacts")]
    args += ["--cache-dir", str(tmp_path / "cache")]
    assert main([*args, "--trials", "1"]) == 0
    for image in folder.rglob("*.*"):
        image.write_bytes(b"\0" * image.stat().st_size)
    assert main([*args, "--trials", "2"]) == 0
    study = optuna.load_study(study_name="twice", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    images, labels = stored_test_part(study)  # what the report scores a best trial on
    assert len(images) == len(labels) > 0 and images.shape[-1] == 32 and images.any()
