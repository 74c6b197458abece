"""Per-trial artifacts through Optuna's artifact store, so optuna-dashboard shows them on each trial.

Every finished trial gets its per-class precision/recall/F1 and, where they serve, figures: its
learning curves when it ran two epochs or more, its validation confusion matrix when it is as good as
the best quarter of the trials so far (the best trials, which the report and a user look at, always
are). A few tens of kilobytes in all. The files live in a FileSystemArtifactStore; the study database
only holds their names and ids.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import tempfile
from pathlib import Path

import numpy as np
import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import TrialState

from search.data.dataset import Dataset
from search.data.sources import VAL
from search.errors import UserError
from search.study.plots import plot_confusion, plot_curves
from search.study.scores import classify
from search.study.trial_facts import VAL_MACRO_F1, objective_value
from search.training.core import METRICS, Status, TrialResult, better

log = logging.getLogger(__name__)

CURVES_FILE = "learning_curves.png"
CONFUSION_FILE = "val_confusion_matrix.png"
PER_CLASS_FILE = "val_per_class.csv"
WITH_ARTIFACTS = (Status.COMPLETE, Status.PRUNED)  # a diverged or failed trial's figures would be NaN or empty
MIN_CURVE_EPOCHS = 2  # one point is not a curve (a features trial's single fit)
FIGURES_FOR_EVERY_TRIAL_UP_TO = 5  # complete trials: before there is a quarter to be in, every trial earns a figure
FIGURE_SHARE = 0.25  # the best quarter of the complete trials so far earn a confusion figure


def open_artifact_store(path: Path) -> FileSystemArtifactStore:
    """The study's artifact folder (created when missing): one store shared by every worker."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create --artifact-dir {path}: {exc.strerror}; pick a writable folder") from None
    return FileSystemArtifactStore(str(path))


def earns_a_figure(trial: optuna.Trial, result: TrialResult, metric: str) -> bool:
    """Whether the trial is as good as the best quarter of the complete trials so far (every trial is, early on).

    A figure costs a few tenths of a second to draw, as much as fitting a features trial: the trials
    a user looks at get one, the rest keep their per-class scores. Not the median: as the sampler
    converges, most new trials beat the median of the old ones (22 of 30 on digits did).
    """
    if result.best is None:
        return False
    complete = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    known = [value for t in complete if (value := objective_value(t)) is not None]
    if len(known) < FIGURES_FOR_EVERY_TRIAL_UP_TO:
        return True
    share = FIGURE_SHARE if METRICS[metric] == "minimize" else 1 - FIGURE_SHARE
    return not better(float(np.quantile(known, share)), result.best.value(metric), metric)


def save_trial_artifacts(
    trial: optuna.Trial, result: TrialResult, data: Dataset, store: FileSystemArtifactStore | None, *, metric: str
) -> list[str]:
    """Upload the trial's curves, confusion matrix and per-class scores; returns the file names.

    Curves need two epochs; the confusion figure only goes to trials that earn one (earns_a_figure).
    A full disk or a vanished folder costs the trial its figures, not its result.
    """
    if store is None or result.status not in WITH_ARTIFACTS:
        return []
    with tempfile.TemporaryDirectory(prefix="trial-artifacts-") as tmp:
        folder = Path(tmp)
        files = []
        if len(result.history) >= MIN_CURVE_EPOCHS:
            history = [dataclasses.asdict(m) for m in result.history]
            files.append(plot_curves(history, folder / CURVES_FILE, title=f"trial {trial.number}"))
        if result.val_probabilities is not None and len(result.val_probabilities):
            scores = classify(data.labels_of(VAL), result.val_probabilities, data.class_names)
            trial.set_user_attr(VAL_MACRO_F1, scores.macro_f1)
            if earns_a_figure(trial, result, metric):
                title = f"trial {trial.number}: validation ({scores.accuracy:.1%})"
                files.append(plot_confusion(scores.confusion, data.class_names, folder / CONFUSION_FILE, title=title))
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
