"""A trial's model kept as an artifact only while it is among the study's best, and read back; on real SQLite."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from optuna.artifacts import FileSystemArtifactStore

from search.errors import UserError
from search.kinds import get_kind
from search.study.checkpoints import CHECKPOINT_ATTR, KEPT_MODELS, load_checkpoint, save_if_among_best
from search.training.core import METRICS, EpochMetrics, Status, TrialResult
from tests.helpers import head_config

KIND = get_kind("finetune")
CONFIG = head_config()


def result(value: float, metric: str, *, weights: float = 1.0, model: bool = True) -> TrialResult:
    """A complete trial whose best epoch scored `value` on `metric`, with a recognisable head weight."""
    loss, accuracy = (value, 0.5) if metric == "val_loss" else (1.0, value)
    best = EpochMetrics(epoch=1, train_loss=1.0, train_accuracy=0.5, val_loss=loss, val_accuracy=accuracy, seconds=0.1)
    state = {"head.w": torch.arange(6, dtype=torch.float32).reshape(2, 3) * weights, "head.b": torch.ones(2) * weights}
    return TrialResult(status=Status.COMPLETE, best=best, history=[best], seconds=0.1, model=state if model else None)


@pytest.fixture
def store(tmp_path: Path) -> FileSystemArtifactStore:
    (tmp_path / "artifacts").mkdir()
    return FileSystemArtifactStore(str(tmp_path / "artifacts"))


def new_study(tmp_path: Path, metric: str) -> optuna.Study:
    return optuna.create_study(
        study_name=f"checkpoints-{metric}", storage=f"sqlite:///{tmp_path / 'optuna.db'}", direction=METRICS[metric]
    )


def run_trial(study: optuna.Study, store: FileSystemArtifactStore, outcome: TrialResult, metric: str) -> str | None:
    """One trial as the objective runs it: train (given), maybe keep the model, then tell the study."""
    trial = study.ask()
    kept = save_if_among_best(trial, KIND, CONFIG, outcome, store, metric=metric)
    assert outcome.best is not None
    study.tell(trial, outcome.best.value(metric))
    return kept


@pytest.mark.parametrize(("metric", "sign"), [("val_loss", 1.0), ("val_accuracy", -1.0)])
def test_a_trial_keeps_its_model_only_while_it_is_among_the_best(
    tmp_path: Path, store: FileSystemArtifactStore, metric: str, sign: float
) -> None:
    """The first KEPT_MODELS trials keep theirs; then only a trial beaten by fewer than KEPT_MODELS does, and
    a kept model that KEPT_MODELS others come to beat is released from the store."""
    study = new_study(tmp_path, metric)
    folder = tmp_path / "artifacts"
    ranked = [0.5 + sign * 0.01 * k for k in range(KEPT_MODELS)]  # best first in the metric's direction

    kept = [run_trial(study, store, result(value, metric), metric) or "" for value in ranked]
    assert all(kept) and len(set(kept)) == KEPT_MODELS

    worst = ranked[-1]
    assert run_trial(study, store, result(worst + sign * 0.1, metric), metric) is None, "beaten by all of them"
    tie = run_trial(study, store, result(worst, metric), metric)
    assert tie is not None, "a tie with the last kept one is beaten by one fewer"
    assert sorted(p.name for p in folder.iterdir()) == sorted([*kept, tie])
    inside = run_trial(study, store, result(ranked[0] + sign * 0.001, metric), metric)
    assert inside is not None, "beaten by one trial only"
    assert sorted(p.name for p in folder.iterdir()) == sorted([*kept[:-1], inside]), "the two last ones released"

    attrs = [t.user_attrs.get(CHECKPOINT_ATTR) for t in study.trials]
    assert attrs == [*kept, None, tie, inside]


def test_an_infeasible_trial_neither_keeps_a_model_nor_counts_against_others(
    tmp_path: Path, store: FileSystemArtifactStore
) -> None:
    study = new_study(tmp_path, "val_accuracy")
    for _ in range(KEPT_MODELS):  # over a constraint and better than everything after: not a kept model
        trial = study.ask()
        trial.set_constraint("latency", 1.0)
        assert (
            save_if_among_best(trial, KIND, CONFIG, result(0.99, "val_accuracy"), store, metric="val_accuracy") is None
        )
        study.tell(trial, 0.99)
    assert run_trial(study, store, result(0.5, "val_accuracy"), "val_accuracy") is not None


def test_a_result_without_a_model_or_best_epoch_keeps_nothing(tmp_path: Path, store: FileSystemArtifactStore) -> None:
    study = new_study(tmp_path, "val_loss")
    assert run_trial(study, store, result(1.0, "val_loss", model=False), "val_loss") is None
    no_epoch = TrialResult(status=Status.DIVERGED, best=None, history=[], seconds=0.1, model={"head.w": torch.ones(1)})
    trial = study.ask()
    assert save_if_among_best(trial, KIND, CONFIG, no_epoch, store, metric="val_loss") is None
    assert list((tmp_path / "artifacts").iterdir()) == []
    assert CHECKPOINT_ATTR not in study.trials[0].user_attrs


def test_load_checkpoint_gives_back_the_trials_own_tensors(tmp_path: Path, store: FileSystemArtifactStore) -> None:
    study = new_study(tmp_path, "val_loss")
    run_trial(study, store, result(1.0, "val_loss", weights=1.0), "val_loss")
    run_trial(study, store, result(0.5, "val_loss", weights=3.0), "val_loss")
    loaded = optuna.load_study(study_name=study.study_name, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    for trial, weights in zip(loaded.trials, (1.0, 3.0), strict=True):
        state = load_checkpoint(trial, KIND, store, study_name=loaded.study_name)
        assert set(state) == {"head.w", "head.b"}
        assert torch.equal(state["head.w"], torch.arange(6, dtype=torch.float32).reshape(2, 3) * weights)
        assert torch.equal(state["head.b"], torch.ones(2) * weights)


def test_a_trial_that_kept_no_model_says_to_pick_the_best(tmp_path: Path, store: FileSystemArtifactStore) -> None:
    study = new_study(tmp_path, "val_loss")
    for value in range(KEPT_MODELS + 1):
        run_trial(study, store, result(float(value), "val_loss"), "val_loss")
    last = KEPT_MODELS
    with pytest.raises(UserError, match=rf"trial {last} of study 'checkpoints-val_loss' kept no model") as error:
        load_checkpoint(study.trials[last], KIND, store, study_name=study.study_name)
    assert "pick the study's best trial" in str(error.value)


def test_a_deleted_artifact_file_asks_for_the_artifact_dir(tmp_path: Path, store: FileSystemArtifactStore) -> None:
    study = new_study(tmp_path, "val_loss")
    artifact_id = run_trial(study, store, result(1.0, "val_loss"), "val_loss")
    assert artifact_id is not None
    (tmp_path / "artifacts" / artifact_id).unlink()
    with pytest.raises(UserError, match="missing from the artifact store") as error:
        load_checkpoint(study.trials[0], KIND, store, study_name=study.study_name)
    assert "--artifact-dir" in str(error.value)
    # the same trial read through a store at another folder (a wrong --artifact-dir) says the same
    elsewhere = FileSystemArtifactStore(str(tmp_path))
    with pytest.raises(UserError, match="missing from the artifact store"):
        load_checkpoint(study.trials[0], KIND, elsewhere, study_name=study.study_name)
