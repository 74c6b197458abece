"""A trial's trained model as an Optuna artifact, kept when the trial is among the study's best so far.

The few best are kept, not only the best: an ensemble (`python -m search ensemble`) is built from them.

Only the parts a trial trained are stored, in the file its kind writes: the unfrozen stages and the
head of a finetune trial (the frozen stages are the backbone's own weights, recorded with the study),
or the fitted scikit-learn pipeline of a features trial. `search.study.trained` rebuilds the model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.artifacts import download_artifact, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial, TrialState

from search.errors import UserError
from search.kinds import StudyKind
from search.study.trial_facts import feasible
from search.training.core import TrialResult, better

CHECKPOINT_ATTR = "checkpoint_artifact_id"  # trial user attr: the artifact holding its trained model
# a trial keeps its model when fewer than this many finished trials beat it: the best and an
# ensemble's candidates (Caruana et al. 2004 select from a library; a handful of the best serves)
KEPT_MODELS = 5
VAL_PREDICTIONS_ATTR = "val_predictions_artifact_id"  # trial user attr: a kept trial's validation probabilities
VAL_PREDICTIONS_FILE = "val_predictions.npz"


def among_best(study: optuna.Study, value: float, metric: str) -> bool:
    """Whether fewer than KEPT_MODELS feasible complete trials so far are strictly better than `value`."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    values = [t.value for t in complete if t.value is not None and feasible(t)]
    return sum(better(other, value, metric) for other in values) < KEPT_MODELS


def save_if_among_best(
    trial: optuna.Trial,
    kind: StudyKind,
    config: object,
    result: TrialResult,
    store: Any,
    *,
    metric: str,
    val_labels: np.ndarray | None = None,
) -> str | None:
    """Upload the trial's model when it is among the KEPT_MODELS best so far; returns the artifact id.

    With `val_labels`, its validation probabilities go beside it: what an ensemble is selected on.
    """
    infeasible = any(value > 0.0 for value in trial.constraints.values())  # over a deployment constraint
    if result.best is None or result.model is None or infeasible:
        return None
    if not among_best(trial.study, result.best.value(metric), metric):
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / kind.checkpoint_file
        kind.write_checkpoint(config, result.model, path)
        artifact_id = upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)
    trial.set_user_attr(CHECKPOINT_ATTR, artifact_id)
    if val_labels is not None and result.val_probabilities is not None:
        save_val_predictions(trial, result.val_probabilities, val_labels, store)
    return artifact_id


def save_val_predictions(trial: optuna.Trial, probabilities: np.ndarray, labels: np.ndarray, store: Any) -> None:
    """The trial's validation probabilities and their labels, as one artifact (VAL_PREDICTIONS_FILE)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / VAL_PREDICTIONS_FILE
        np.savez(path, probabilities=probabilities.astype(np.float32), labels=labels.astype(np.int64))
        artifact_id = upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)
    trial.set_user_attr(VAL_PREDICTIONS_ATTR, artifact_id)


def load_val_predictions(trial: FrozenTrial, store: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """A kept trial's validation probabilities and labels; None when it has none (or the store lost them)."""
    artifact_id = trial.user_attrs.get(VAL_PREDICTIONS_ATTR)
    if artifact_id is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / VAL_PREDICTIONS_FILE
        try:
            download_artifact(artifact_store=store, file_path=str(path), artifact_id=artifact_id)
        except (ArtifactNotFound, FileNotFoundError):
            return None
        with np.load(path) as saved:
            return saved["probabilities"], saved["labels"]


def load_checkpoint(trial: FrozenTrial, kind: StudyKind, store: Any, *, study_name: str) -> Any:
    """The stored model parts of a finished trial, as its kind reads them."""
    artifact_id = trial.user_attrs.get(CHECKPOINT_ATTR)
    if artifact_id is None:
        raise UserError(
            f"trial {trial.number} of study '{study_name}' kept no model (only a trial among the {KEPT_MODELS} best "
            "when it finished keeps one); pick the study's best trial"
        )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model"
        try:
            download_artifact(artifact_store=store, file_path=str(path), artifact_id=artifact_id)
        except (ArtifactNotFound, FileNotFoundError):
            raise UserError(
                f"the model of trial {trial.number} of study '{study_name}' is missing from the artifact store; "
                "pass the --artifact-dir the study was run with"
            ) from None
        return kind.read_checkpoint(path)
