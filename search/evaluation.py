"""The held-out test evaluation: the study's best configuration, scored once on the test split.

The search never sees the test images; only the final choice is scored on them, and the result is
stored on the study (attribute `test_evaluation`) for the summary, the report and the dashboard.
Several workers may finish a study at once: each skips the work when the stored evaluation is
already for the current best trial.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
import torch
from optuna.artifacts._protocol import ArtifactStore

from search.dataset import Dataset
from search.errors import UserError
from search.metrics import Classification, classify
from search.results import completed_trials
from search.sources import TEST
from search.trained_model import TrainedModel, load_trial_model

log = logging.getLogger(__name__)

TEST_ATTR = "test_evaluation"
BATCH = 256  # images per forward pass: bounded memory for any test split


def predict_batches(model: TrainedModel, images: torch.Tensor, *, batch: int = BATCH) -> np.ndarray:
    """Class probabilities for uint8 images [N, 3, S, S], a batch at a time."""
    parts = [model.predict_proba(images[start : start + batch]) for start in range(0, len(images), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, len(model.class_names)), np.float32)


def stored_evaluation(study: optuna.Study) -> dict[str, Any] | None:
    """The stored test evaluation if it is for the current best trial, else None."""
    done = completed_trials(study)
    stored = study.user_attrs.get(TEST_ATTR)
    if not done or not isinstance(stored, dict) or stored.get("trial") != done[0].number:
        return None
    return stored


def evaluate_on_test(
    study: optuna.Study,
    store: ArtifactStore,
    *,
    device: torch.device,
    data: Dataset | Callable[[], Dataset],
) -> dict[str, Any] | None:
    """Score the best trial's model on the test split and store it; None without a completed trial.

    `data` may be a function, so that a caller without decoded images (the report) decodes them
    only when the evaluation has to be computed.
    """
    done = completed_trials(study)
    if not done:
        return None
    current = stored_evaluation(study)
    if current is not None:
        return current
    best = done[0]
    dataset = data() if callable(data) else data
    images, labels = dataset.part(TEST)
    if not len(labels):
        log.warning("study %s has no test images; the best trial is not evaluated on a test split", study.study_name)
        return None
    model = load_trial_model(study, best, store, device=device)
    scores = classify(labels.numpy(), predict_batches(model, images), dataset.class_names)
    record = {"trial": best.number, "images": len(labels), **scores.to_record()}
    study.set_user_attr(TEST_ATTR, record)
    return record


def finish_study(study: optuna.Study, store: ArtifactStore | None, *, device: torch.device, data: Dataset) -> None:
    """The runner's last step: evaluate the best trial on the test split, unless that is impossible.

    A best trial without a checkpoint (e.g. its upload failed) leaves the study unevaluated with a
    warning; the report says so and can retry.
    """
    if store is None:
        return
    try:
        evaluate_on_test(study, store, device=device, data=data)
    except UserError as exc:
        log.warning("test evaluation skipped: %s", exc)


def test_scores(record: dict[str, Any]) -> Classification:
    return Classification.from_record(record)
