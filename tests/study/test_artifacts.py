"""Per-trial artifacts and the held-out test evaluation, on a small finished study."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState

from search.data.dataset import Dataset, decode_source
from search.data.sources import TEST, VAL, open_source
from search.study.artifacts import (
    CONFUSION_FILE,
    CURVES_FILE,
    PER_CLASS_FILE,
    fetch_artifact,
    read_per_class,
    save_trial_artifacts,
)
from search.study.evaluation import evaluate_on_test, stored_test_part
from search.study.record import TEST_ATTR, record_of, trial_artifacts
from search.training.core import EpochMetrics, Status, TrialResult
from tests.results_study import FinishedStudy, finished_study, png_ok


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> FinishedStudy:
    return finished_study(tmp_path_factory, "finetune")


def test_every_finished_trial_has_readable_curves_confusion_matrix_and_per_class_scores(
    study: FinishedStudy, tmp_path: Path
) -> None:
    loaded = study.load()
    store = FileSystemArtifactStore(str(study.artifact_dir))
    classes = loaded.user_attrs["data"]["classes"]
    val_count = loaded.user_attrs["data"]["split_counts"]["val"]
    finished = loaded.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert finished
    for trial in finished:
        ids = trial_artifacts(loaded, trial)
        assert {CURVES_FILE, CONFUSION_FILE, PER_CLASS_FILE} <= set(ids), (trial.number, ids)
        folder = tmp_path / str(trial.number)
        folder.mkdir()
        files = {name: fetch_artifact(store, ids[name], folder / name) for name in ids}
        curves, confusion, per_class = (files[CURVES_FILE], files[CONFUSION_FILE], files[PER_CLASS_FILE])
        assert curves is not None and confusion is not None and per_class is not None
        assert png_ok(curves)[0] >= 400 and png_ok(confusion)[0] >= 300
        assert curves.stat().st_size < 200_000 and confusion.stat().st_size < 200_000, "small files"
        rows = read_per_class(per_class)
        assert [r["class"] for r in rows] == classes
        assert sum(int(r["support"]) for r in rows) == val_count
        assert all(0.0 <= float(r[k]) <= 1.0 for r in rows for k in ("precision", "recall", "f1"))
        assert 0.0 <= trial.user_attrs["val_macro_f1"] <= 1.0


def test_best_trial_is_scored_once_on_the_test_split(study: FinishedStudy) -> None:
    loaded = study.load()
    record = loaded.user_attrs[TEST_ATTR]
    assert record["trial"] == loaded.best_trial.number
    test_count = loaded.user_attrs["data"]["split_counts"]["test"]
    assert record["images"] == test_count
    assert sum(map(sum, record["confusion"])) == test_count
    assert record["accuracy"] == pytest.approx(np.trace(np.asarray(record["confusion"])) / test_count)
    assert len(record["per_class"]) == len(loaded.user_attrs["data"]["classes"])
    assert 0.0 <= record["macro_f1"] <= 1.0
    # a second call (another worker finishing) reuses the stored evaluation: no data is decoded
    store = FileSystemArtifactStore(str(study.artifact_dir))
    again = evaluate_on_test(loaded, store, device=torch.device("cpu"), test_part=_never)
    assert again == record


def _never() -> tuple[torch.Tensor, torch.Tensor]:
    raise AssertionError("the stored evaluation is current; nothing should be decoded")


def test_stored_test_part_is_the_study_test_split(study: FinishedStudy) -> None:
    """The streamed test images (report, features studies) are the in-memory ones of the same split."""
    loaded = study.load()
    images, labels = stored_test_part(loaded)
    split = record_of(loaded).split
    assert split is not None, "the study recorded its split"
    digits = open_source("digits", root=Path("studies/datasets"), classes=record_of(loaded).made.classes)
    same = decode_source(digits, image_size=32).with_split(split)
    expected_images, expected_labels = same.part(TEST)
    assert torch.equal(labels, expected_labels)
    assert torch.equal(images, expected_images)


def test_curves_only_where_there_are_epochs(small_digits: Dataset, tmp_path: Path) -> None:
    """A classifier fitted in one step (one epoch or none) gets its confusion matrix and scores, no curves."""
    store = FileSystemArtifactStore(str(tmp_path))
    study = optuna.create_study()
    labels = small_digits.labels.numpy()[small_digits.split == VAL]
    probabilities = np.eye(small_digits.num_classes, dtype=np.float32)[labels]
    epoch = EpochMetrics(1, 0.5, 0.8, 0.4, 1.0, 0.1)
    one_step = TrialResult(status=Status.COMPLETE, best=epoch, history=[], seconds=0.1, val_probabilities=probabilities)
    one_epoch = dataclasses.replace(one_step, history=[epoch])
    with_epochs = dataclasses.replace(one_step, history=[epoch, dataclasses.replace(epoch, epoch=2)])
    pruned_without_scores = dataclasses.replace(with_epochs, status=Status.PRUNED, val_probabilities=None)
    diverged = dataclasses.replace(with_epochs, status=Status.DIVERGED)
    assert save_trial_artifacts(study.ask(), one_step, small_digits, store, metric="val_loss") == [
        CONFUSION_FILE,
        PER_CLASS_FILE,
    ]
    assert save_trial_artifacts(study.ask(), one_epoch, small_digits, store, metric="val_loss") == [
        CONFUSION_FILE,
        PER_CLASS_FILE,
    ]
    assert save_trial_artifacts(study.ask(), with_epochs, small_digits, store, metric="val_loss") == [
        CURVES_FILE,
        CONFUSION_FILE,
        PER_CLASS_FILE,
    ]
    assert save_trial_artifacts(study.ask(), pruned_without_scores, small_digits, store, metric="val_loss") == [
        CURVES_FILE
    ]
    assert save_trial_artifacts(study.ask(), diverged, small_digits, store, metric="val_loss") == []
    assert save_trial_artifacts(study.ask(), with_epochs, small_digits, None, metric="val_loss") == []
    first = study.trials[0]
    assert first.user_attrs["val_macro_f1"] == 1.0
    assert set(trial_artifacts(study, first)) == {CONFUSION_FILE, PER_CLASS_FILE}


def test_once_there_are_five_complete_trials_only_the_best_quarter_get_a_confusion_figure(
    small_digits: Dataset, tmp_path: Path
) -> None:
    store = FileSystemArtifactStore(str(tmp_path))
    study = optuna.create_study(direction="minimize")
    for loss in (0.1, 0.2, 0.3, 0.4, 0.5):
        study.add_trial(optuna.trial.create_trial(value=loss, distributions={}, params={}))
    labels = small_digits.labels.numpy()[small_digits.split == VAL]
    probabilities = np.eye(small_digits.num_classes, dtype=np.float32)[labels]

    def result(val_loss: float) -> TrialResult:
        epoch = EpochMetrics(1, 0.5, 0.8, val_loss, 0.9, 0.1)
        return TrialResult(status=Status.COMPLETE, best=epoch, history=[], seconds=0.1, val_probabilities=probabilities)

    for loss in (0.35, 0.25):  # below and above the median (0.3), outside the best quarter (0.2 or less)
        assert save_trial_artifacts(study.ask(), result(loss), small_digits, store, metric="val_loss") == [
            PER_CLASS_FILE
        ]
    assert save_trial_artifacts(study.ask(), result(0.2), small_digits, store, metric="val_loss") == [
        CONFUSION_FILE,
        PER_CLASS_FILE,
    ]
    assert save_trial_artifacts(study.ask(), result(0.05), small_digits, store, metric="val_loss") == [
        CONFUSION_FILE,
        PER_CLASS_FILE,
    ]

    by_accuracy = optuna.create_study(direction="maximize")
    for accuracy in (0.5, 0.6, 0.7, 0.8, 0.9):
        by_accuracy.add_trial(optuna.trial.create_trial(value=accuracy, distributions={}, params={}))

    def figured(accuracy: float) -> bool:
        epoch = EpochMetrics(1, 0.5, 0.8, 0.3, accuracy, 0.1)
        ran = TrialResult(status=Status.COMPLETE, best=epoch, history=[], seconds=0.1, val_probabilities=probabilities)
        return CONFUSION_FILE in save_trial_artifacts(
            by_accuracy.ask(), ran, small_digits, store, metric="val_accuracy"
        )

    assert not figured(0.75) and figured(0.8)
