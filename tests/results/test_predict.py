"""`python -m search predict`'s parts: which files are images, scoring them past broken ones, the CSV."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from search.data.decode import decode_image_file
from search.errors import UserError
from search.kinds import TrainedModel
from search.results.predict import BATCH, Prediction, image_files, predict_files, write_csv
from search.results.reading import artifact_store_for, best_trial
from search.study.trained import load_trial_model
from tests.conftest import write_image_folder
from tests.results_study import finished_study


def write_png(path: Path, value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 20), (value, 255 - value, value // 2)).save(path)
    return path


def test_folders_are_searched_recursively_for_image_suffixes_only(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for name in ("b.png", "sub/deeper/c.JPG", "a.jpeg", "sub/x.webp", "sub/y.bmp", "z.jpg"):
        write_png(root / name)
    (root / "notes.txt").write_text("not an image")
    (root / "sub" / "scan.tiff").write_bytes(b"not a suffix it reads")
    (root / "folder.png").mkdir()  # a folder named like an image is not a file
    found = [p.relative_to(root).as_posix() for p in image_files([root])]
    assert sorted(found) == ["a.jpeg", "b.png", "sub/deeper/c.JPG", "sub/x.webp", "sub/y.bmp", "z.jpg"]


def test_the_order_is_stable_whatever_order_files_were_written_in(tmp_path: Path) -> None:
    names = ["m/2.png", "a.png", "m/10.png", "b/c/d.png", "B.png", "m/1.png"]
    forward, backward = tmp_path / "forward", tmp_path / "backward"
    for name in names:
        write_png(forward / name)
    for name in reversed(names):
        write_png(backward / name)
    first = [p.relative_to(forward).as_posix() for p in image_files([forward])]
    assert first == ["B.png", "a.png", "b/c/d.png", "m/1.png", "m/10.png", "m/2.png"]
    assert [p.relative_to(backward).as_posix() for p in image_files([backward])] == first
    assert image_files([forward]) == image_files([forward]), "the same on every call"


def test_files_named_directly_keep_the_order_given_and_mix_with_folders(tmp_path: Path) -> None:
    one, two = write_png(tmp_path / "one.png"), write_png(tmp_path / "two.png")
    folder = tmp_path / "more"
    inside = [write_png(folder / "b.png"), write_png(folder / "a.png")]
    assert image_files([two, folder, one]) == [two, inside[1], inside[0], one]


def test_a_path_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    write_png(tmp_path / "ok.png")
    missing = tmp_path / "photso"
    with pytest.raises(UserError) as caught:
        image_files([tmp_path / "ok.png", missing])
    assert str(caught.value) == f"{missing} is neither an image file nor a folder"


def test_a_folder_without_images_is_refused(tmp_path: Path) -> None:
    empty, notes = tmp_path / "empty", tmp_path / "notes"
    empty.mkdir()
    (notes / "deep").mkdir(parents=True)
    (notes / "deep" / "readme.txt").write_text("no images here")
    with pytest.raises(UserError) as caught:
        image_files([empty, notes])
    assert str(caught.value) == f"no images (.bmp/.jpeg/.jpg/.png/.webp) in {empty}, {notes}"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    study = finished_study(tmp_path_factory, "finetune").load()
    return load_trial_model(study, best_trial(study), artifact_store_for(study, None))


@pytest.fixture
def shapes(tmp_path: Path) -> list[Path]:
    return image_files([write_image_folder(tmp_path / "shapes", per_class=2)])


def test_every_readable_file_gets_its_most_probable_class(model: TrainedModel, shapes: list[Path]) -> None:
    predictions = predict_files(model, shapes)
    assert [p.path for p in predictions] == shapes
    pixels = torch.from_numpy(np.stack([decode_image_file(p, model.image_size) for p in shapes]))
    probabilities = model.predict_proba(pixels)
    for prediction, row in zip(predictions, probabilities, strict=True):
        assert prediction.label == model.class_names[int(row.argmax())]
        assert prediction.probability == pytest.approx(float(row.max()), abs=1e-6)
        assert 1 / len(model.class_names) <= prediction.probability <= 1.0


def test_a_corrupt_file_is_skipped_with_a_warning_and_the_rest_predicted(
    model: TrainedModel, shapes: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corrupt = tmp_path / "shapes" / "disc" / "broken.png"
    corrupt.write_bytes(b"\x89PNG junk, the upload was cut short")
    files = [*shapes[:3], corrupt, *shapes[3:]]
    with caplog.at_level(logging.WARNING, logger="search.results.predict"):
        predictions = predict_files(model, files)
    assert predictions == predict_files(model, shapes), "the readable files score as they do on their own"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "search.results.predict"]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert message.startswith(f"skipped 1 unreadable image(s) of {len(files)} (e.g. {corrupt}: ")


def test_no_readable_file_is_a_user_error(model: TrainedModel, tmp_path: Path) -> None:
    broken = [tmp_path / "a.png", tmp_path / "b.jpg"]
    for path in broken:
        path.write_bytes(b"junk")
    with pytest.raises(UserError, match=rf"^none of the 2 image\(s\) could be read \(e\.g\. {broken[0]}: "):
        predict_files(model, broken)


def test_the_csv_has_a_header_and_one_row_per_prediction(tmp_path: Path) -> None:
    predictions = [
        Prediction(Path("photos/cat 1.png"), "cat", 0.987654321),
        Prediction(Path("photos/dog,2.png"), "dog", 1.0),
    ]
    out = tmp_path / "new" / "folder" / "predictions.csv"
    write_csv(predictions, out)
    with out.open(newline="") as file:
        rows = list(csv.reader(file))
    assert rows == [
        ["path", "class", "probability"],
        ["photos/cat 1.png", "cat", "0.987654"],
        ["photos/dog,2.png", "dog", "1.000000"],
    ]
    write_csv(predictions[1:], out)
    assert out.read_text().splitlines() == ["path,class,probability", '"photos/dog,2.png",dog,1.000000'], "replaced"


def test_a_batch_of_only_corrupt_files_does_not_stop_the_next_batch(
    model: TrainedModel, shapes: list[Path], tmp_path: Path
) -> None:
    junk = [tmp_path / f"junk_{i:02d}.png" for i in range(BATCH)]
    for path in junk:
        path.write_bytes(b"junk")
    predictions = predict_files(model, [*junk, shapes[0]])
    assert [p.path for p in predictions] == [shapes[0]]
