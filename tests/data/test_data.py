"""Data sources, decoding, the stratified split and every bad input's one-line error."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from search.data.dataset import Dataset, decode_source, stratified_split
from search.data.sizing import typical_size
from search.data.sources import TEST, TRAIN, VAL, open_source
from search.errors import UserError
from tests.conftest import write_image_folder


def test_digits_source_is_the_bundled_set() -> None:
    source = open_source("digits", root=Path("unused"))
    assert len(source) == 1797
    assert source.class_names == tuple(str(d) for d in range(10))
    data = decode_source(source, image_size=32)
    assert data.images.shape == (1797, 3, 32, 32)
    assert data.images.dtype.is_floating_point is False


def test_folder_with_class_subfolders_decodes_every_format(image_folder: Path) -> None:
    source = open_source(str(image_folder), root=Path("unused"))
    assert source.class_names == ("bar", "cross", "disc")
    data = decode_source(source, image_size=32)
    assert data.images.shape == (36, 3, 32, 32)
    assert np.bincount(data.labels.numpy()).tolist() == [12, 12, 12]


def test_presplit_folder_keeps_given_val_and_carves_test_from_train(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "split", per_class=10, split_dirs=("train", "val"))
    source = open_source(str(root), root=Path("unused"))
    split = stratified_split(source.labels, source.given_split, source.class_names, seed=0)
    assert ((split == VAL) == (source.given_split == VAL)).all()
    assert (split[source.given_split == TRAIN] == TEST).sum() > 0
    assert (split == TRAIN).sum() > 0


def test_split_is_stratified_seeded_and_restorable(digits: Dataset) -> None:
    again = stratified_split(
        digits.labels.numpy(), np.full(len(digits.labels), -1, dtype=np.int8), digits.class_names, seed=0
    )
    assert (again == digits.split).all()
    other = stratified_split(
        digits.labels.numpy(), np.full(len(digits.labels), -1, dtype=np.int8), digits.class_names, seed=1
    )
    assert not (other == digits.split).all()
    fractions = np.bincount(digits.split, minlength=3) / len(digits.split)
    assert np.allclose(fractions, [0.70, 0.15, 0.15], atol=0.01)
    for part in (TRAIN, VAL, TEST):
        per_class = np.bincount(digits.labels.numpy()[digits.split == part], minlength=10)
        assert per_class.min() > 0.6 * per_class.max()
    restored = digits.with_split(digits.encoded_split())
    assert (restored.split == digits.split).all()


def test_exif_rotation_is_applied(tmp_path: Path) -> None:
    """A photo stored sideways with an EXIF orientation tag is decoded upright."""
    pixels = np.zeros((32, 64, 3), dtype=np.uint8)
    pixels[:, :32] = 255  # bright left half, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.fromarray(pixels).save(tmp_path / name / "photo.jpg", exif=exif)
        Image.fromarray(pixels).save(tmp_path / name / "plain.png")
    data = decode_source(open_source(str(tmp_path), root=Path("unused")), image_size=32)
    upright = data.images[0].float().mean(dim=0)  # a/photo.jpg
    assert upright[:8].mean() > 200 and upright[-8:].mean() < 50  # the bright half is now on top


def test_fingerprint_changes_when_a_file_changes(image_folder: Path) -> None:
    before = open_source(str(image_folder), root=Path("unused")).fingerprint()
    (image_folder / "disc" / "disc_0.png").unlink()
    assert open_source(str(image_folder), root=Path("unused")).fingerprint() != before


def test_typical_size_reads_the_images(image_folder: Path) -> None:
    assert 24 <= typical_size(open_source(str(image_folder), root=Path("unused"))) <= 48


def test_unreadable_images_are_skipped_and_counted(image_folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    truncated = image_folder / "disc" / "truncated.jpg"
    truncated.write_bytes((image_folder / "bar" / "bar_1.jpg").read_bytes()[:200])
    (image_folder / "bar" / "not_really.png").write_text("this is text, not an image")
    (image_folder / "cross" / "notes.txt").write_text("ignored")
    data = decode_source(open_source(str(image_folder), root=Path("unused")), image_size=32)
    assert len(data.labels) == 36
    assert "skipped 2 unreadable images" in caplog.text
    assert "ignored 1 files that are not images" in caplog.text
    # skipping loses nothing: the user's bad files are still there to fix
    assert truncated.stat().st_size == 200 and (image_folder / "bar" / "not_really.png").exists()


def test_mostly_unreadable_folder_is_an_error(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(3):
            (tmp_path / name / f"{i}.jpg").write_text("garbage")
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "ok.png")
    with pytest.raises(UserError, match="could not be read"):
        decode_source(open_source(str(tmp_path), root=Path("unused")), image_size=32)


def _folder(tmp_path: Path, layout: dict[str, int]) -> Path:
    for name, count in layout.items():
        (tmp_path / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (16, 16), (i * 20, 0, 0)).save(tmp_path / name / f"{i}.png")
    return tmp_path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "is not a folder that exists"),
        (lambda p: _folder(p, {"cats": 5, "dogs": 0}), "holds no images"),
        (lambda p: _folder(p, {"cats": 5}), "only one class"),
        (lambda p: p, "no class sub-folders"),
        (lambda p: _folder(p, {"val/cats": 3, "val/dogs": 3}), "no train/ folder"),
        (lambda p: (p / "file.png").write_bytes(b"x") and p / "file.png", "is a file"),
        (lambda p: _folder(p, {"train/cats": 3, "train/dogs": 3, "birds": 3}), "mixes split folders"),
    ],
)
def test_bad_folders_give_one_line_errors(tmp_path: Path, make: Callable[[Path], Path], message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        open_source(str(make(tmp_path)), root=Path("unused"))
    assert "\n" not in str(info.value)


def test_class_too_small_to_split_is_an_error(tmp_path: Path) -> None:
    source = open_source(str(_folder(tmp_path, {"cats": 5, "dogs": 2})), root=Path("unused"))
    with pytest.raises(UserError, match="class 'dogs' has 2 training image"):
        stratified_split(source.labels, source.given_split, source.class_names, seed=0)


def test_torchvision_dataset_offline_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # a closed local port: no download can work
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    with pytest.raises(UserError, match="could not be downloaded"):
        open_source("cifar10", root=tmp_path)
