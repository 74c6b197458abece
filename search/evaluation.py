"""The held-out test evaluation: the study's best configuration, scored once on the test split.

The search never sees the test images; only the final choice is scored on them, and the result is
stored on the study (attribute `test_evaluation`) for the summary, the report and the dashboard.
Several workers may finish a study at once: each skips the work when the stored evaluation is
already for the current best trial.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.artifacts._protocol import ArtifactStore

from search.dataset import SPLIT_ATTR, SPLIT_CODES, Dataset, dataset_of, decoded_batches
from search.errors import UserError
from search.metrics import Classification, classify
from search.results import completed_trials
from search.sources import TEST, open_source
from search.trained_model import load_trial_model

log = logging.getLogger(__name__)

TEST_ATTR = "test_evaluation"


def stored_evaluation(study: optuna.Study) -> dict[str, Any] | None:
    """The stored test evaluation if it is for the current best trial, else None."""
    done = completed_trials(study)
    stored = study.user_attrs.get(TEST_ATTR)
    if not done or not isinstance(stored, dict) or stored.get("trial") != done[0].number:
        return None
    return stored


Part = tuple[torch.Tensor, torch.Tensor]  # uint8 images [N, 3, S, S] and their labels


def stored_test_part(study: optuna.Study) -> Part:
    """The study's test images, decoded from its recorded source in one streaming pass (only they are kept).

    For callers without decoded images: the report, and the runner of a features study, which
    streams its images into the feature cache instead of holding them.
    """
    spec, recorded = study.user_attrs.get("spec", {}), study.user_attrs.get("data", {})
    split = study._storage.get_study_system_attrs(study._study_id).get(SPLIT_ATTR)
    if "image_size" not in spec or "fingerprint" not in recorded or split is None:
        raise UserError(f"study '{study.study_name}' holds no data record or split; it was not made by run_study.py")
    source = open_source(spec["data"], root=Path(spec["data_root"]))
    is_test = np.frombuffer(split.encode(), dtype=np.uint8) == ord(SPLIT_CODES[TEST])
    good = np.zeros(len(source), dtype=bool)
    kept, position = [], 0
    for indices, images, _ in decoded_batches(source, image_size=int(spec["image_size"])):
        good[indices] = True
        mask = is_test[position : position + len(indices)]
        if len(mask) == len(indices):
            kept.append(images[torch.from_numpy(mask)])
        position += len(indices)
    data = dataset_of(source, good, None, image_size=int(spec["image_size"]))
    if data.fingerprint != recorded["fingerprint"] or position != len(split):
        raise UserError(
            f"the data '{spec['data']}' changed since study '{study.study_name}' ran; its test split is gone"
        )
    return torch.cat(kept), data.labels[torch.from_numpy(is_test)]


def evaluate_on_test(
    study: optuna.Study, store: ArtifactStore, *, device: torch.device, test_part: Callable[[], Part]
) -> dict[str, Any] | None:
    """Score the best trial's model on the test split and store it; None without a completed trial.

    `test_part` is called only when the evaluation has to be computed, so that a current stored
    one costs nothing.
    """
    done = completed_trials(study)
    if not done:
        return None
    current = stored_evaluation(study)
    if current is not None:
        return current
    best = done[0]
    images, labels = test_part()
    if not len(labels):
        log.warning("study %s has no test images; the best trial is not evaluated on a test split", study.study_name)
        return None
    model = load_trial_model(study, best, store, device=device)
    scores = classify(labels.numpy(), model.predict_proba(images), model.class_names)
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

    def test_part() -> Part:
        return data.part(TEST) if data.has_images else stored_test_part(study)

    try:
        evaluate_on_test(study, store, device=device, test_part=test_part)
    except UserError as exc:
        log.warning("test evaluation skipped: %s", exc)


def test_scores(record: dict[str, Any]) -> Classification:
    return Classification.from_record(record)
