"""A trial's trained model as an Optuna artifact, kept when the trial is among the study's best so far.

The few best are kept, not only the best: an ensemble (`python -m search ensemble`) is built from them.

A kept model is the very folder `export` writes (search.kinds.model_files), zipped into one artifact:
its network's tensors and a features trial's fitted pipeline, with what rebuilds it. Reading it back
needs neither the study's record nor its backbone's weights, so a trial's model is the same thing in
the study, in --from-trial, in an export and in predict.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.artifacts import download_artifact, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial, TrialState

from search.errors import UserError, exception_line
from search.kinds import TrainedModel
from search.kinds.model_files import unzip_model, zip_model
from search.study.trial_facts import feasible, objective_value
from search.training.core import TrialResult, better

CHECKPOINT_ATTR = "checkpoint_artifact_id"  # trial user attr: the artifact holding its trained model
# a trial keeps its model while fewer than this many finished trials beat it: the best, and the
# library an ensemble is selected from (Caruana et al. 2004; a wider library gives it more to combine,
# each model kept costs disk: bench/RESULTS.md, "Ensembles of the best trials", compares 5 and 10)
KEPT_MODELS = 10
VAL_PREDICTIONS_ATTR = "val_predictions_artifact_id"  # trial user attr: a kept trial's validation probabilities
VAL_PREDICTIONS_FILE = "val_predictions.npz"
KEPT_MODEL_FILE = "model.zip"
CPU = torch.device("cpu")


def feasible_values(complete: list[FrozenTrial]) -> list[float]:
    return [value for t in complete if (value := objective_value(t)) is not None and feasible(t)]


def among_best(value: float, others: list[float], metric: str) -> bool:
    """Whether fewer than KEPT_MODELS of the `others` are strictly better than `value`."""
    return sum(better(other, value, metric) for other in others) < KEPT_MODELS


def release_beaten(complete: list[FrozenTrial], store: Any, newcomer: float, metric: str) -> list[int]:
    """Remove the kept files of finished trials that KEPT_MODELS others now beat; returns their numbers.

    The disk holds about KEPT_MODELS models however long the study runs. A file another worker
    removed already is no error.
    """
    values = [*feasible_values(complete), newcomer]
    released = []
    for trial in complete:
        value = objective_value(trial)
        if CHECKPOINT_ATTR not in trial.user_attrs or value is None:
            continue
        if among_best(value, values, metric):
            continue
        for key in (CHECKPOINT_ATTR, VAL_PREDICTIONS_ATTR):
            if key in trial.user_attrs:
                with contextlib.suppress(ArtifactNotFound, FileNotFoundError):
                    store.remove(trial.user_attrs[key])
        released.append(trial.number)
    return released


def save_if_among_best(
    trial: optuna.Trial,
    model_of: Callable[[], TrainedModel],
    result: TrialResult,
    store: Any,
    *,
    metric: str,
    val_labels: np.ndarray | None = None,
) -> str | None:
    """Upload the trial's model (built by `model_of` from `result`, only when kept) when it is among the
    KEPT_MODELS best so far; returns the artifact id.

    With `val_labels`, its validation probabilities go beside it: what an ensemble is selected on.
    """
    infeasible = any(value > 0.0 for value in trial.constraints.values())  # over a deployment constraint
    if result.best is None or result.model is None or infeasible:
        return None
    value = result.best.value(metric)
    complete = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not among_best(value, feasible_values(complete), metric):
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / KEPT_MODEL_FILE
        zip_model(model_of(), path)
        artifact_id = upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)
    trial.set_user_attr(CHECKPOINT_ATTR, artifact_id)
    if val_labels is not None and result.val_probabilities is not None:
        save_val_predictions(trial, result.val_probabilities, val_labels, store)
    release_beaten(complete, store, value, metric)
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


def load_kept_model(trial: FrozenTrial, store: Any, *, study_name: str, device: torch.device = CPU) -> TrainedModel:
    """The model a finished trial kept, ready to predict; one line when it kept none or it is gone."""
    artifact_id = trial.user_attrs.get(CHECKPOINT_ATTR)
    if artifact_id is None:
        raise UserError(
            f"trial {trial.number} of study '{study_name}' kept no model (only a trial among the {KEPT_MODELS} best "
            "when it finished keeps one); pick the study's best trial"
        )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / KEPT_MODEL_FILE
        try:
            download_artifact(artifact_store=store, file_path=str(path), artifact_id=artifact_id)
        except (ArtifactNotFound, FileNotFoundError):
            raise UserError(
                f"the model of trial {trial.number} of study '{study_name}' is missing from the artifact store: "
                f"it was released when {KEPT_MODELS} better trials had finished (pick one of the study's best), "
                "or this is not the --artifact-dir the study was run with"
            ) from None
        try:
            return unzip_model(path, device=device)
        except UserError:
            raise
        except Exception as exc:  # damaged, or kept by a version that kept another format
            raise UserError(
                f"the kept model of trial {trial.number} of study '{study_name}' could not be read "
                f"({exception_line(exc)}); "
                "run the study again under a new --study-name"
            ) from None
