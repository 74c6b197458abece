"""`python -m search export` then `predict` on image files: the round trip agrees with the study."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from search.cli.results import main
from search.study.record import TEST_ATTR
from tests.results_study import FinishedStudy, finished_study, run_search, write_test_digits


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> FinishedStudy:
    return finished_study(tmp_path_factory, "finetune")


def test_export_then_predict_matches_the_in_study_test_accuracy(
    study: FinishedStudy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "model"
    assert main(["export", *study.args(), "--out", str(bundle)]) == 0
    loaded = study.load()
    assert f"exported trial {loaded.best_trial.number} of {study.name}" in capsys.readouterr().out

    images = write_test_digits(loaded, tmp_path / "test_images")  # the held-out digits as PNG files
    out = tmp_path / "predictions.csv"
    predicted = run_search(tmp_path, "predict", "--model", str(bundle), str(images), "--out", str(out))  # as a user
    assert predicted.returncode == 0, predicted.stdout + predicted.stderr
    with out.open() as file:
        rows = list(csv.DictReader(file))
    test = loaded.user_attrs[TEST_ATTR]
    assert len(rows) == test["images"]
    assert all(0.0 < float(r["probability"]) <= 1.0 for r in rows)
    accuracy = sum(Path(r["path"]).parent.name == r["class"] for r in rows) / len(rows)
    assert accuracy == pytest.approx(test["accuracy"], abs=1e-9), "files on disk are scored as the study scored them"

    one = sorted((images / "3").iterdir())[0]
    assert main(["predict", "--model", str(bundle), str(one)]) == 0
    path, label, probability = capsys.readouterr().out.strip().split("\t")
    assert path == str(one) and label in loaded.user_attrs["data"]["classes"] and 0 < float(probability) <= 1


def test_bad_bundles_images_and_targets_are_one_line_errors(
    study: FinishedStudy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "images"
    image.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bundle.json").write_text(json.dumps({"format": "something else"}))
    cases = [
        (["predict", "--model", str(tmp_path / "none"), str(image)], "none"),
        (["predict", "--model", str(broken), str(image)], "broken"),
        (["export", *study.args(), "--out", str(broken)], "already exists and is not an empty folder"),
        (["export", *study.args(), "--out", str(tmp_path / "x"), "--trial", "99"], "trial 99 of study"),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, err
        assert "Traceback" not in err


def test_predict_refuses_a_folder_without_images(
    study: FinishedStudy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "model"
    assert main(["export", *study.args(), "--out", str(bundle)]) == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    capsys.readouterr()
    assert main(["predict", "--model", str(bundle), str(empty)]) == 2
    assert capsys.readouterr().err.strip().startswith("error: no images (")
    unreadable = empty / "broken.png"
    unreadable.write_bytes(b"not a png")
    assert main(["predict", "--model", str(bundle), str(unreadable)]) == 2
    assert "none of the 1 image(s) could be read" in capsys.readouterr().err
