"""Reading a study back never creates what it reads: missing databases, names, trials and folders are clear errors."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.study import StudyDirection
from optuna.trial import TrialState

from search.errors import UserError
from search.results.reading import (
    DEFAULT_ARTIFACT_DIR,
    artifact_store_for,
    best_trial,
    load_existing_study,
    open_existing_storage,
)
from search.study.record import trial_artifacts
from tests.results_study import FinishedStudy, finished_study


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> FinishedStudy:
    return finished_study(tmp_path_factory, "finetune")


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def test_a_sqlite_file_that_does_not_exist_is_refused_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "optuna.db"
    with pytest.raises(UserError) as caught:
        open_existing_storage(sqlite_url(missing))
    assert str(caught.value) == (
        f"no study database at {missing} (--storage sqlite:///{missing}); run run_study.py first or pass the --storage it used"
    )
    assert not missing.exists() and not missing.parent.exists(), "reading creates nothing"

    with pytest.raises(UserError, match="no study database at"):
        load_existing_study(sqlite_url(missing), "anything")
    assert not missing.exists()


def test_a_folder_is_not_a_database_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no study database at"):
        open_existing_storage(sqlite_url(tmp_path))


def test_an_existing_database_and_an_in_memory_one_open(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "optuna.db")
    optuna.create_study(study_name="there", storage=url)
    storage = open_existing_storage(url)
    assert [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)] == ["there"]
    assert optuna.get_all_study_summaries(open_existing_storage("sqlite:///:memory:")) == [], "nothing to refuse"


def test_a_url_that_is_not_a_database_is_a_one_line_error() -> None:
    with pytest.raises(UserError, match="is not a database URL"):
        open_existing_storage("not a url")


def test_an_unknown_study_name_lists_the_names_there(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "optuna.db")
    for name in ("zeta", "alpha"):
        optuna.create_study(study_name=name, storage=url)
    with pytest.raises(UserError) as caught:
        load_existing_study(url, "alhpa")
    assert str(caught.value) == f"no study 'alhpa' in {url}; studies there: alpha, zeta"
    names = [s.study_name for s in optuna.get_all_study_summaries(url, include_best_trial=False)]
    assert sorted(names) == ["alpha", "zeta"], "the mistyped name was not created"
    assert load_existing_study(url, "zeta").study_name == "zeta"


def test_an_unknown_name_in_an_empty_database_says_it_holds_no_study(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "optuna.db")
    optuna.create_study(study_name="gone", storage=url)
    optuna.delete_study(study_name="gone", storage=url)
    with pytest.raises(UserError) as caught:
        load_existing_study(url, "gone")
    assert str(caught.value) == f"no study 'gone' in {url}; it holds no study yet"


def test_a_study_without_a_completed_trial_counts_its_trials_by_state(tmp_path: Path) -> None:
    study = optuna.create_study(study_name="unlucky", storage=sqlite_url(tmp_path / "optuna.db"))
    for state in (TrialState.PRUNED, TrialState.FAIL, TrialState.PRUNED):
        study.tell(study.ask(), state=state)
    study.ask()  # one still running
    with pytest.raises(UserError) as caught:
        best_trial(study)
    assert str(caught.value) == (
        "study 'unlucky' has no completed trial yet (1 running, 2 pruned, 1 fail); "
        "run run_study.py on it until one completes"
    )


def test_a_study_without_trials_says_so() -> None:
    study = optuna.create_study(study_name="new")
    with pytest.raises(UserError, match=r"^study 'new' has no completed trial yet \(no trials\); run run_study.py"):
        best_trial(study)


@pytest.mark.parametrize("direction", [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE])
def test_the_best_trial_follows_the_direction(direction: StudyDirection) -> None:
    study = optuna.create_study(direction=direction)
    for value in (0.5, 0.9, 0.1):
        study.tell(study.ask(), value)
    study.tell(study.ask(), state=TrialState.PRUNED)
    assert best_trial(study).value == (0.9 if direction == StudyDirection.MAXIMIZE else 0.1)


def test_the_artifact_folder_must_exist(finished: FinishedStudy, tmp_path: Path) -> None:
    study = finished.load()
    missing = tmp_path / "no-artifacts"
    with pytest.raises(UserError) as caught:
        artifact_store_for(study, missing)
    assert str(caught.value) == (
        f"artifact folder {missing} of study '{finished.name}' does not exist; pass the --artifact-dir it was run with"
    )
    assert not missing.exists(), "reading creates nothing"


def test_the_artifact_folder_defaults_to_the_one_the_study_was_run_with(
    finished: FinishedStudy, tmp_path: Path
) -> None:
    study = finished.load()
    artifact_id = next(iter(trial_artifacts(study, best_trial(study)).values()))
    with artifact_store_for(study, None).open_reader(artifact_id) as reader:
        assert reader.read(), "the recorded folder holds the study's artifacts"
    given = tmp_path / "elsewhere"
    given.mkdir()
    with pytest.raises(ArtifactNotFound):  # a given folder wins over the recorded one
        artifact_store_for(study, given).open_reader(artifact_id)


def test_a_study_that_records_no_folder_falls_back_to_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = optuna.create_study(study_name="plain", storage=sqlite_url(tmp_path / "optuna.db"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=f"^artifact folder {DEFAULT_ARTIFACT_DIR} of study 'plain' does not exist"):
        artifact_store_for(study, None)
    (tmp_path / DEFAULT_ARTIFACT_DIR).mkdir(parents=True)
    (tmp_path / DEFAULT_ARTIFACT_DIR / "an-id").write_bytes(b"kept")
    with artifact_store_for(study, None).open_reader("an-id") as reader:
        assert reader.read() == b"kept"
