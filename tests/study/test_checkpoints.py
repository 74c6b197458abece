"""A trial's model kept as an artifact (the bundle export writes) only while it is among the study's best,
and read back; on real SQLite."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pytest
import torch
from optuna.artifacts import FileSystemArtifactStore

from search.errors import UserError
from search.kinds import ModelInputs, TrainedModel, get_kind
from search.kinds.scratch.kind import REFERENCE
from search.models.scratch import scratch_backbone
from search.study.checkpoints import CHECKPOINT_ATTR, KEPT_MODELS, load_kept_model, save_if_among_best
from search.training.core import METRICS, EpochMetrics, Status, TrialResult
from tests.helpers import scratch_config

CONFIG = dataclasses.asdict(scratch_config())
CLASSES = ("a", "b", "c")


def scratch_model(bias: float) -> TrainedModel:
    """A small untrained scratch network whose classifier's bias is `bias`: recognisable when read back."""
    torch.manual_seed(0)  # the same random convolutions each time: only the bias tells two models apart
    inputs = ModelInputs(scratch_backbone(REFERENCE), CLASSES, 32)
    model = get_kind("scratch").trained_model(CONFIG, None, inputs)
    classifier = [m for m in model.network.head.modules() if isinstance(m, torch.nn.Linear)][-1]  # type: ignore[attr-defined]
    torch.nn.init.constant_(classifier.bias, bias)
    return model


def result(value: float, metric: str, *, model: bool = True) -> TrialResult:
    """A complete trial whose best epoch scored `value` on `metric`."""
    loss, accuracy = (value, 0.5) if metric == "val_loss" else (1.0, value)
    best = EpochMetrics(epoch=1, train_loss=1.0, train_accuracy=0.5, val_loss=loss, val_accuracy=accuracy, seconds=0.1)
    return TrialResult(status=Status.COMPLETE, best=best, history=[best], seconds=0.1, model={} if model else None)


def never_built() -> TrainedModel:
    raise AssertionError("a model that is not kept is never built")


@pytest.fixture
def store(tmp_path: Path) -> FileSystemArtifactStore:
    (tmp_path / "artifacts").mkdir()
    return FileSystemArtifactStore(str(tmp_path / "artifacts"))


def new_study(tmp_path: Path, metric: str) -> optuna.Study:
    return optuna.create_study(
        study_name=f"checkpoints-{metric}", storage=f"sqlite:///{tmp_path / 'optuna.db'}", direction=METRICS[metric]
    )


def run_trial(
    study: optuna.Study, store: FileSystemArtifactStore, outcome: TrialResult, metric: str, *, bias: float = 0.0
) -> str | None:
    """One trial as the objective runs it: train (given), maybe keep the model, then tell the study."""
    trial = study.ask()
    kept = save_if_among_best(trial, lambda: scratch_model(bias), outcome, store, metric=metric)
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
            save_if_among_best(trial, never_built, result(0.99, "val_accuracy"), store, metric="val_accuracy") is None
        )
        study.tell(trial, 0.99)
    assert run_trial(study, store, result(0.5, "val_accuracy"), "val_accuracy") is not None


def test_a_result_without_a_model_or_best_epoch_keeps_nothing(tmp_path: Path, store: FileSystemArtifactStore) -> None:
    study = new_study(tmp_path, "val_loss")
    assert run_trial(study, store, result(1.0, "val_loss", model=False), "val_loss") is None
    no_epoch = TrialResult(status=Status.DIVERGED, best=None, history=[], seconds=0.1, model={"head.w": torch.ones(1)})
    trial = study.ask()
    assert save_if_among_best(trial, never_built, no_epoch, store, metric="val_loss") is None
    assert list((tmp_path / "artifacts").iterdir()) == []
    assert CHECKPOINT_ATTR not in study.trials[0].user_attrs


def test_a_kept_model_reads_back_as_the_trials_own_model(tmp_path: Path, store: FileSystemArtifactStore) -> None:
    study = new_study(tmp_path, "val_loss")
    run_trial(study, store, result(1.0, "val_loss"), "val_loss", bias=1.0)
    run_trial(study, store, result(0.5, "val_loss"), "val_loss", bias=3.0)
    loaded = optuna.load_study(study_name=study.study_name, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    for trial, bias in zip(loaded.trials, (1.0, 3.0), strict=True):
        model = load_kept_model(trial, store, study_name=loaded.study_name)
        expected = scratch_model(bias).network.state_dict()  # type: ignore[attr-defined]
        state = model.network.state_dict()  # type: ignore[attr-defined]
        assert set(state) == set(expected)
        assert all(torch.equal(state[name], expected[name]) for name in expected), "the trial's own tensors"
        assert model.class_names == CLASSES and model.kind == "scratch"


def test_a_damaged_kept_model_is_one_line(tmp_path: Path, store: FileSystemArtifactStore) -> None:
    study = new_study(tmp_path, "val_loss")
    artifact_id = run_trial(study, store, result(1.0, "val_loss"), "val_loss")
    assert artifact_id is not None
    (tmp_path / "artifacts" / artifact_id).write_bytes(b"not a zip")
    with pytest.raises(UserError, match=r"kept model of trial 0 .* could not be read") as error:
        load_kept_model(study.trials[0], store, study_name=study.study_name)
    assert "--study-name" in str(error.value) and "\n" not in str(error.value)


def test_a_trial_that_kept_no_model_says_to_pick_the_best(tmp_path: Path, store: FileSystemArtifactStore) -> None:
    study = new_study(tmp_path, "val_loss")
    for value in range(KEPT_MODELS + 1):
        run_trial(study, store, result(float(value), "val_loss"), "val_loss")
    last = KEPT_MODELS
    with pytest.raises(UserError, match=rf"trial {last} of study 'checkpoints-val_loss' kept no model") as error:
        load_kept_model(study.trials[last], store, study_name=study.study_name)
    assert "pick the study's best trial" in str(error.value)


def test_a_deleted_artifact_file_asks_for_the_artifact_dir(tmp_path: Path, store: FileSystemArtifactStore) -> None:
    study = new_study(tmp_path, "val_loss")
    artifact_id = run_trial(study, store, result(1.0, "val_loss"), "val_loss")
    assert artifact_id is not None
    (tmp_path / "artifacts" / artifact_id).unlink()
    with pytest.raises(UserError, match="missing from the artifact store") as error:
        load_kept_model(study.trials[0], store, study_name=study.study_name)
    assert "--artifact-dir" in str(error.value)
    # the same trial read through a store at another folder (a wrong --artifact-dir) says the same
    elsewhere = FileSystemArtifactStore(str(tmp_path))
    with pytest.raises(UserError, match="missing from the artifact store"):
        load_kept_model(study.trials[0], elsewhere, study_name=study.study_name)
