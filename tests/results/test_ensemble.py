"""Ensembles of a study's best trials: the selection rule, then real studies built, exported and predicted."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from search.bundle_format import BUNDLE_FILE
from search.cli.results import main as results_main
from search.errors import UserError
from search.results.bundles import load_bundle, save_bundle, save_onnx_bundle
from search.results.ensemble import build_ensemble, scored, select, stored_ensemble
from search.results.ensemble_model import ENSEMBLE_KIND, EnsembleModel
from search.results.ensemble_section import section_ensemble
from search.results.reading import artifact_store_for
from search.results.sections import Report
from search.study.checkpoints import CHECKPOINT_ATTR, VAL_PREDICTIONS_ATTR
from search.study.evaluation import stored_test_part
from search.study.record import best_completed, record_of
from search.study.trial_facts import TrialFacts
from tests.results_study import REAL_PHOTOS, FinishedStudy, assert_onnx_agrees, finished_study, pixels, run_search

CPU = torch.device("cpu")
LAST_LINE = re.compile(
    r"ensemble of (\d+) trials?: val (\d+\.\d)%, test (\d+\.\d|n/a)%? \(best trial #(\d+): val (\d+\.\d)%, test .*\)"
)


def one_hot_right_on(items: np.ndarray, labels: np.ndarray, classes: int, confidence: float) -> np.ndarray:
    """Probabilities that put `confidence` on the true class for `items` and on the next class elsewhere."""
    predicted = (labels + 1) % classes
    predicted[items] = labels[items]
    probabilities = np.full((len(labels), classes), (1 - confidence) / (classes - 1))
    probabilities[np.arange(len(labels)), predicted] = confidence
    return probabilities


def test_selection_combines_complementary_trials_and_never_falls_below_the_best() -> None:
    """Three trials each right on two thirds (different ones): two of three votes are right everywhere."""
    labels = np.arange(90) % 3
    thirds = np.array_split(np.arange(90), 3)
    trials = [one_hot_right_on(np.concatenate([thirds[i], thirds[(i + 1) % 3]]), labels, 3, 0.8) for i in range(3)]
    counts = select(trials, labels, size=5)
    assert all(counts), counts
    average = np.average(trials, axis=0, weights=counts)
    assert scored(average, labels)[0] == 1.0 > scored(trials[0], labels)[0]

    worse = [trials[0], one_hot_right_on(np.arange(10), labels, 3, 0.9)]  # a second trial that only hurts
    assert select(worse, labels, size=5) == [1, 0], "the best single trial alone is the best ensemble"
    assert sum(c > 0 for c in select(trials, labels, size=2)) == 2, "--size caps the distinct trials"


@pytest.fixture(scope="module")
def finetune_study(tmp_path_factory: pytest.TempPathFactory) -> FinishedStudy:
    return finished_study(tmp_path_factory, "finetune")


@pytest.fixture(scope="module")
def features_study(tmp_path_factory: pytest.TempPathFactory) -> FinishedStudy:
    return finished_study(tmp_path_factory, "features")


def test_trials_among_the_best_keep_their_model_and_validation_probabilities(features_study: FinishedStudy) -> None:
    study = features_study.load()
    kept = [t for t in study.trials if CHECKPOINT_ATTR in t.user_attrs]
    assert len(kept) >= 2, "the first trials are all among the best so far"
    assert all(VAL_PREDICTIONS_ATTR in t.user_attrs for t in kept)


@pytest.mark.parametrize("space", ["finetune", "features"])
def test_an_ensemble_is_scored_stored_and_never_below_the_best_trial_on_val(
    space: str, finetune_study: FinishedStudy, features_study: FinishedStudy
) -> None:
    finished = {"finetune": finetune_study, "features": features_study}[space]
    study = finished.load()
    model, summary = build_ensemble(study, artifact_store_for(study, None), device=CPU)
    best = best_completed(study)
    assert best is not None and summary.best_trial == best.number
    assert summary.best_val_accuracy is not None and summary.val_accuracy >= summary.best_val_accuracy
    assert sum(summary.weights) == pytest.approx(1.0) and set(summary.trials) == set(model.trials)

    images, labels = stored_test_part(study)
    expected = float((model.predict_proba(images).argmax(1) == labels.numpy()).mean())
    assert summary.test_accuracy == pytest.approx(expected) and summary.test_images == len(labels) > 0
    facts = [TrialFacts.of(t) for t in study.trials if t.number in model.trials]
    assert summary.size_bytes == sum(f.size_bytes or 0 for f in facts)
    assert stored_ensemble(finished.load()) == summary, "the report reads what the command stored"


def test_an_ensemble_bundle_and_its_onnx_graph_predict_what_the_ensemble_does(
    finetune_study: FinishedStudy, tmp_path: Path
) -> None:
    study = finetune_study.load()
    model, _ = build_ensemble(study, artifact_store_for(study, None), size=2, device=CPU)
    save_bundle(model, tmp_path / "bundle")
    record = json.loads((tmp_path / "bundle" / BUNDLE_FILE).read_text())
    assert record["kind"] == ENSEMBLE_KIND and len(record["members"]) == len(model.members)

    loaded = load_bundle(tmp_path / "bundle")
    assert isinstance(loaded, EnsembleModel) and loaded.weights == model.weights
    images = torch.from_numpy(pixels(REAL_PHOTOS, model.image_size))
    np.testing.assert_allclose(loaded.predict_proba(images), model.predict_proba(images), atol=1e-6)

    save_onnx_bundle(model, tmp_path / "onnx")
    assert_onnx_agrees(model, tmp_path / "onnx")


def test_the_ensemble_command_exports_and_ends_with_its_one_line_answer(
    features_study: FinishedStudy, tmp_path: Path
) -> None:
    out = tmp_path / "ensemble"
    result = run_search(tmp_path, "ensemble", *features_study.args(), "--size", "3", "--out", str(out))
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    match = LAST_LINE.fullmatch(last)
    assert match is not None, last
    assert 1 <= int(match[1]) <= 3 and float(match[2]) >= float(match[5])
    loaded = load_bundle(out)  # predict reads it as any bundle (load_model)
    assert isinstance(loaded, EnsembleModel) and len(loaded.members) == int(match[1])


def test_bad_ensemble_requests_are_one_line_errors(
    features_study: FinishedStudy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = features_study.load()
    with pytest.raises(UserError, match="at least one trial"):
        build_ensemble(study, artifact_store_for(study, None), size=0, device=CPU)

    (tmp_path / "artifacts").mkdir()
    plain = optuna.create_study(storage=f"sqlite:///{tmp_path / 'plain.db'}", study_name="plain")
    plain.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    with pytest.raises(UserError, match="kept its model and validation probabilities"):
        build_ensemble(plain, artifact_store_for(plain, tmp_path / "artifacts"), device=CPU)

    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").touch()
    assert results_main(["ensemble", *features_study.args(), "--out", str(tmp_path / "used")]) == 2
    assert "is not an empty folder" in capsys.readouterr().err


def test_the_report_shows_the_ensemble_beside_the_best_trial(features_study: FinishedStudy) -> None:
    study = features_study.load()
    _, summary = build_ensemble(study, artifact_store_for(study, None), device=CPU)
    report = Report(record_of(study))
    section_ensemble(report, features_study.load())
    rows = [line for line in report.lines if line.startswith("| ")]
    assert report.lines[0] == "## Ensemble and refit"
    assert rows[1].startswith("| ensemble (#") and f"{summary.test_accuracy:.2%}" in rows[1]
    assert rows[2].startswith(f"| best trial #{summary.best_trial} |")
