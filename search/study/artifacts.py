"""Per-trial artifacts through Optuna's artifact store, so optuna-dashboard shows them on each trial.

Every finished trial gets its learning curves (when it has epochs), its validation confusion matrix
and its per-class precision/recall/F1, a few tens of kilobytes in all. The files live in a
FileSystemArtifactStore; the study database only holds their names and ids.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import tempfile
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound

from search.data.dataset import Dataset
from search.data.sources import VAL
from search.errors import UserError
from search.study.plots import plot_confusion, plot_curves
from search.study.scores import classify
from search.training.core import Status, TrialResult

log = logging.getLogger(__name__)

CURVES_FILE = "learning_curves.png"
CONFUSION_FILE = "val_confusion_matrix.png"
PER_CLASS_FILE = "val_per_class.csv"
WITH_ARTIFACTS = (Status.COMPLETE, Status.PRUNED)  # a diverged or failed trial's figures would be NaN or empty


def open_artifact_store(path: Path) -> FileSystemArtifactStore:
    """The study's artifact folder (created when missing): one store shared by every worker."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create --artifact-dir {path}: {exc.strerror}; pick a writable folder") from None
    return FileSystemArtifactStore(str(path))


def save_trial_artifacts(
    trial: optuna.Trial, result: TrialResult, data: Dataset, store: FileSystemArtifactStore | None
) -> list[str]:
    """Upload the trial's curves, confusion matrix and per-class scores; returns the file names.

    A full disk or a vanished folder costs the trial its figures, not its result.
    """
    if store is None or result.status not in WITH_ARTIFACTS:
        return []
    with tempfile.TemporaryDirectory(prefix="trial-artifacts-") as tmp:
        folder = Path(tmp)
        files = []
        if result.history:
            history = [dataclasses.asdict(m) for m in result.history]
            files.append(plot_curves(history, folder / CURVES_FILE, title=f"trial {trial.number}"))
        if result.val_probabilities is not None and len(result.val_probabilities):
            labels = data.labels.numpy()[data.split == VAL]
            scores = classify(labels, result.val_probabilities, data.class_names)
            trial.set_user_attr("val_macro_f1", scores.macro_f1)
            files.append(
                plot_confusion(
                    scores.confusion,
                    data.class_names,
                    folder / CONFUSION_FILE,
                    title=f"trial {trial.number}: validation ({scores.accuracy:.1%})",
                )
            )
            (folder / PER_CLASS_FILE).write_text(scores.per_class_csv())
            files.append(folder / PER_CLASS_FILE)
        try:
            for path in files:
                upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)
        except OSError as exc:
            log.warning("trial %d: artifacts not saved (%s)", trial.number, exc)
            return []
    return [p.name for p in files]


def fetch_artifact(store: FileSystemArtifactStore, artifact_id: str, path: Path) -> Path | None:
    """Download one artifact to `path`; None when the store no longer has it (e.g. another --artifact-dir)."""
    path.unlink(missing_ok=True)  # download_artifact refuses to overwrite
    try:
        download_artifact(artifact_store=store, file_path=str(path), artifact_id=artifact_id)
    except (OSError, ArtifactNotFound):
        return None
    return path


def read_per_class(path: Path) -> list[dict[str, str]]:
    """The rows of a per-class CSV written by save_trial_artifacts."""
    with path.open(newline="") as file:
        return list(csv.DictReader(file))
