"""The held-out test evaluation: the study's best configuration, scored once on the test split.

The search never sees the test images; only the final choice is scored on them, and the result is
stored on the study (attribute `test_evaluation`) for the summary, the report and the dashboard.
Several workers may finish a study at once: each skips the work when the stored evaluation is
already for the current best trial, and the workers `--workers` starts leave it to their parent,
which scores the best trial once after they end.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore

from search.data.dataset import SPLIT_CODES, dataset_of
from search.data.pixel_cache import cached_images
from search.data.sources import TEST, open_source
from search.errors import UserError
from search.kinds import Part, Prepared, StudyKind
from search.progress import progress_bar
from search.study.record import best_completed, record_of, store_test, stored_test
from search.study.scores import classify
from search.study.trained import load_trial_model
from search.study.workers import worker_id

log = logging.getLogger(__name__)
SCORE_BATCH = 256  # test images scored between two progress updates
TEST_BY_PARENT_ENV = (
    "TRANSFER_SEARCH_TEST_BY_PARENT"  # set by --workers on its workers: the parent scores the test once
)


def stored_test_part(study: optuna.Study) -> Part:
    """The study's test images, read from the decoded-image cache of its recorded source (decoded there if absent).

    For callers without decoded images: the report, and the runner of a kind that does not hold its
    images (features streams them into the feature cache).
    """
    record = record_of(study)
    if record.resolved is None or record.data is None or record.split is None:
        raise UserError(f"study '{study.study_name}' holds no data record or split; it was not made by run_study.py")
    spec, split, image_size = record.made, record.split, record.resolved.image_size
    source = open_source(spec.data, root=spec.data_root, classes=spec.classes)
    decoded = cached_images(source, image_size=image_size, root=spec.cache_dir)
    data = dataset_of(source, decoded.good, None, image_size=image_size)
    if data.fingerprint != record.data.fingerprint or len(data.labels) != len(split):
        raise UserError(f"the data '{spec.data}' changed since study '{study.study_name}' ran; its test split is gone")
    is_test = np.frombuffer(split.encode(), dtype=np.uint8) == ord(SPLIT_CODES[TEST])
    return torch.from_numpy(decoded.images[np.flatnonzero(is_test)]), data.labels[torch.from_numpy(is_test)]


def evaluate_on_test(
    study: optuna.Study, store: FileSystemArtifactStore, *, device: torch.device, test_part: Callable[[], Part]
) -> dict[str, Any] | None:
    """Score the best trial's model on the test split and store it; None without a completed trial.

    `test_part` is called only when the evaluation has to be computed, so that a current stored
    one costs nothing.
    """
    best = best_completed(study)
    if best is None:
        return None
    current = stored_test(study)
    if current is not None:
        return current
    images, labels = test_part()
    if not len(labels):
        log.warning("study %s has no test images; the best trial is not evaluated on a test split", study.study_name)
        return None
    model = load_trial_model(study, best, store, device=device)
    with progress_bar(f"scoring trial {best.number} on {len(labels)} test images", len(labels)) as advance:
        chunks = []
        for batch in images.split(SCORE_BATCH):
            chunks.append(model.predict_proba(batch))
            advance(len(batch))
    scores = classify(labels.numpy(), np.concatenate(chunks), model.class_names)
    record = {"trial": best.number, "images": len(labels), "by": worker_id(), **scores.to_record()}
    store_test(study, record)
    return record


def finish_study(
    study: optuna.Study,
    store: FileSystemArtifactStore | None,
    *,
    device: torch.device,
    kind: StudyKind,
    prepared: Prepared,
) -> None:
    """The runner's last step: evaluate the best trial on the test split, unless that is impossible.

    A best trial without a checkpoint (e.g. its upload failed) leaves the study unevaluated with a
    warning; the report says so and can retry.
    """
    if store is None or os.environ.get(TEST_BY_PARENT_ENV):
        return

    def test_part() -> Part:
        held = kind.test_images(prepared)
        return held if held is not None else stored_test_part(study)

    try:
        evaluate_on_test(study, store, device=device, test_part=test_part)
    except UserError as exc:
        log.warning("test evaluation skipped: %s", exc)


def evaluate_from_record(study: optuna.Study, store: FileSystemArtifactStore, *, device: torch.device) -> None:
    """The test evaluation from what the study recorded alone (the --workers parent): test images decoded again."""
    try:
        evaluate_on_test(study, store, device=device, test_part=lambda: stored_test_part(study))
    except UserError as exc:
        log.warning("test evaluation skipped: %s", exc)
