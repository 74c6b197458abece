"""Exporting a trial's model: which trial, and never over a folder that holds something."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from search.bundle_format import BUNDLE_FILE
from search.errors import UserError
from search.results.bundles import load_bundle
from search.results.export import chosen_trial, export_model
from search.results.reading import artifact_store_for
from tests.helpers import FEW_DIGIT_CLASSES
from tests.results_study import FinishedStudy, finished_study

CPU = torch.device("cpu")


@pytest.fixture
def mixed() -> optuna.Study:
    """Trials 0..4: complete 0.6, pruned, complete 0.8, failed, running."""
    study = optuna.create_study(study_name="mixed", direction="maximize")
    study.tell(study.ask(), 0.6)
    study.tell(study.ask(), state=TrialState.PRUNED)
    study.tell(study.ask(), 0.8)
    study.tell(study.ask(), state=TrialState.FAIL)
    study.ask()
    return study


def test_no_number_chooses_the_best_completed_trial(mixed: optuna.Study) -> None:
    assert chosen_trial(mixed, None).number == 2


def test_a_completed_trial_is_chosen_by_its_number(mixed: optuna.Study) -> None:
    chosen = chosen_trial(mixed, 0)
    assert (chosen.number, chosen.value, chosen.state) == (0, 0.6, TrialState.COMPLETE)


@pytest.mark.parametrize(("number", "state"), [(1, "pruned"), (3, "fail"), (4, "running"), (5, "not in the study")])
def test_a_trial_that_did_not_complete_is_refused_saying_why(mixed: optuna.Study, number: int, state: str) -> None:
    with pytest.raises(UserError) as caught:
        chosen_trial(mixed, number)
    assert str(caught.value) == f"trial {number} of study 'mixed' is {state}; pass a completed trial's number"


def test_a_negative_number_is_not_in_the_study(mixed: optuna.Study) -> None:
    with pytest.raises(UserError, match=r"^trial -1 of study 'mixed' is not in the study;"):
        chosen_trial(mixed, -1)


def test_no_completed_trial_at_all_is_the_best_trial_error() -> None:
    study = optuna.create_study(study_name="none-done")
    study.tell(study.ask(), state=TrialState.PRUNED)
    with pytest.raises(UserError, match=r"^study 'none-done' has no completed trial yet \(1 pruned\)"):
        chosen_trial(study, None)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> FinishedStudy:
    return finished_study(tmp_path_factory, "finetune")


def test_a_folder_that_holds_something_is_refused_and_left_alone(finished: FinishedStudy, tmp_path: Path) -> None:
    study = finished.load()
    store = artifact_store_for(study, None)
    out = tmp_path / "model"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError) as caught:
        export_model(study, store, out, device=CPU)
    assert str(caught.value) == f"--out {out} already exists and is not an empty folder; pick a new one"
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"

    a_file = tmp_path / "model.pt"
    a_file.write_bytes(b"")
    with pytest.raises(UserError, match="already exists and is not an empty folder"):
        export_model(study, store, a_file, device=CPU)
    assert a_file.read_bytes() == b""


def test_the_folder_check_comes_before_the_trial_check(finished: FinishedStudy, tmp_path: Path) -> None:
    study = finished.load()
    (tmp_path / "kept").write_text("x")
    with pytest.raises(UserError, match="already exists"):
        export_model(study, artifact_store_for(study, None), tmp_path, trial_number=999, device=CPU)


def test_an_export_into_an_empty_or_new_folder_writes_a_bundle(finished: FinishedStudy, tmp_path: Path) -> None:
    study = finished.load()
    store = artifact_store_for(study, None)
    empty = tmp_path / "empty"
    empty.mkdir()
    trial = export_model(study, store, empty, device=CPU)
    assert trial.number == study.best_trial.number
    assert json.loads((empty / BUNDLE_FILE).read_text())["kind"] == "finetune"
    assert load_bundle(empty).class_names == FEW_DIGIT_CLASSES

    with pytest.raises(UserError, match=rf"^trial 999 of study '{finished.name}' is not in the study"):
        export_model(study, store, tmp_path / "new", trial_number=999, device=CPU)
    assert not (tmp_path / "new").exists(), "a refused trial writes nothing"
