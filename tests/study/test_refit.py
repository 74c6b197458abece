"""Refit: a trial's configuration trained again on train + validation, scored once on test, on real studies."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from search.bundle_format import BUNDLE_FILE
from search.data.sources import TEST, TRAIN, VAL
from search.results.bundles import load_bundle
from search.results.ensemble import build_ensemble
from search.results.reading import artifact_store_for, best_trial
from search.study.evaluation import stored_test_part
from search.study.refit import REFIT_ATTR, Refitter, refit_split, refit_trial
from search.training.core import BestEpoch, EpochMetrics
from tests.results_study import FinishedStudy, finished_study, run_search

CPU = torch.device("cpu")
REFIT_LINE = re.compile(
    r"trial (\d+) refit on (\d+) train \+ validation images for (\d+) epochs?: test (\d+\.\d)% "
    r"\(trained on train only: (\d+\.\d)%\)"
)


def test_the_refit_split_trains_on_validation_and_holds_out_the_test_items() -> None:
    split = np.array([TRAIN, VAL, TEST, TRAIN, VAL, TEST], dtype=np.int8)
    assert refit_split(split).tolist() == [TRAIN, TRAIN, VAL, TRAIN, TRAIN, VAL]


def test_a_refit_keeps_its_last_epoch_whatever_the_held_out_split_says() -> None:
    good = EpochMetrics(epoch=1, train_loss=1.0, train_accuracy=0.5, val_loss=0.5, val_accuracy=0.9, seconds=0.1)
    worse = EpochMetrics(epoch=2, train_loss=0.8, train_accuracy=0.6, val_loss=0.9, val_accuracy=0.6, seconds=0.1)
    for keep_last, kept in ((False, good), (True, worse)):
        tracker = BestEpoch("val_accuracy", keep_last=keep_last)
        tracker.offer(good, np.zeros((1, 2)), lambda: "first")
        tracker.offer(worse, np.zeros((1, 2)), lambda: "second")
        assert tracker.metrics == kept
        assert tracker.stale == (0 if keep_last else 1)


@pytest.fixture(scope="module")
def features_study(tmp_path_factory: pytest.TempPathFactory) -> FinishedStudy:
    return finished_study(tmp_path_factory, "features")


def test_a_refit_model_scores_on_test_what_it_reports_and_the_study_records_it(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A finetune trial in process (the features one runs through the command line below)."""
    finished = finished_study(tmp_path_factory, "finetune")
    study = finished.load()
    recorded = study.user_attrs["spec"]
    trial = best_trial(study)
    model, summary = refit_trial(study, trial, artifact_store_for(study, None), storage=finished.storage, device="cpu")
    assert summary.trial == trial.number and summary.epochs == trial.user_attrs["best_epoch"]

    images, labels = stored_test_part(study)
    accuracy = float((model.predict_proba(images).argmax(1) == labels.numpy()).mean())
    assert summary.test_accuracy == pytest.approx(accuracy), "the reported score is the exported model's"
    assert summary.test_images == len(labels) and summary.train_images > len(labels)
    assert summary.trial_test_accuracy == study.user_attrs["test_evaluation"]["accuracy"]
    assert finished.load().user_attrs[REFIT_ATTR]["test_accuracy"] == summary.test_accuracy
    assert len(finished.load().trials) == len(study.trials), "refitting adds no trial"
    assert finished.load().user_attrs["spec"] == recorded, "nor changes what the study records it was asked"


def test_export_refit_writes_a_bundle_predict_reads(features_study: FinishedStudy, tmp_path: Path) -> None:
    out = tmp_path / "refit"
    result = run_search(tmp_path, "export", *features_study.args(), "--out", str(out), "--refit")
    assert result.returncode == 0, result.stderr
    assert REFIT_LINE.fullmatch(result.stdout.strip().splitlines()[-1]), result.stdout
    assert json.loads((out / BUNDLE_FILE).read_text())["kind"] == "features"
    model = load_bundle(out)
    images, labels = stored_test_part(features_study.load())
    refit = features_study.load().user_attrs[REFIT_ATTR]
    assert float((model.predict_proba(images).argmax(1) == labels.numpy()).mean()) == pytest.approx(
        refit["test_accuracy"]
    )


def test_an_ensemble_of_refit_members_scores_what_its_members_predict(features_study: FinishedStudy) -> None:
    study = features_study.load()
    refitter = Refitter(study, storage=features_study.storage, device="cpu")
    model, summary = build_ensemble(study, artifact_store_for(study, None), device=CPU, refitter=refitter)
    assert summary.refit and "(refit on train + validation)" in summary.line()
    images, labels = stored_test_part(study)
    accuracy = float((model.predict_proba(images).argmax(1) == labels.numpy()).mean())
    assert summary.test_accuracy == pytest.approx(accuracy)
