"""A trial's trained model as an Optuna artifact, kept when the trial becomes the study's best.

Only the parts a trial trained are stored, in the file its kind writes: the unfrozen stages and the
head of a finetune trial (the frozen stages are the backbone's own weights, recorded with the study),
or the fitted scikit-learn pipeline of a features trial. `search.study.trained` rebuilds the model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import download_artifact, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial

from search.errors import UserError
from search.kinds import StudyKind
from search.training.core import TrialResult, better

CHECKPOINT_ATTR = "checkpoint_artifact_id"  # trial user attr: the artifact holding its trained model


def beats_best(study: optuna.Study, value: float, metric: str) -> bool:
    """Whether `value` is better than every completed trial so far (True for the first)."""
    try:
        best = study.best_value
    except ValueError:
        return True
    return better(value, best, metric)


def save_if_best(
    trial: optuna.Trial, kind: StudyKind, config: object, result: TrialResult, store: Any, *, metric: str
) -> str | None:
    """Upload the trial's model when it beats the study's best so far; returns the artifact id."""
    infeasible = any(value > 0.0 for value in trial.constraints.values())  # over a deployment constraint
    if result.best is None or result.model is None or infeasible:
        return None
    if not beats_best(trial.study, result.best.value(metric), metric):
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / kind.checkpoint_file
        kind.write_checkpoint(config, result.model, path)
        artifact_id = upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)
    trial.set_user_attr(CHECKPOINT_ATTR, artifact_id)
    return artifact_id


def load_checkpoint(trial: FrozenTrial, kind: StudyKind, store: Any, *, study_name: str) -> Any:
    """The stored model parts of a finished trial, as its kind reads them."""
    artifact_id = trial.user_attrs.get(CHECKPOINT_ATTR)
    if artifact_id is None:
        raise UserError(
            f"trial {trial.number} of study '{study_name}' kept no model (only a trial that was the study's best "
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
