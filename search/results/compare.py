"""The report's comparison section: several studies side by side, as one table for a lab report.

Figures come from what each study stored (its best trial, its held-out test evaluation, its
per-class artifact); nothing is trained or evaluated here, so a missing figure shows as a dash.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import FrozenTrial

from search.errors import UserError
from search.kinds import get_kind, stands_on_backbone
from search.results.reading import artifact_store_for, load_existing_study
from search.results.text import markdown_table, percent
from search.study.artifacts import PER_CLASS_FILE, fetch_artifact, read_per_class
from search.study.record import (
    StudyRecord,
    best_completed,
    finished_count,
    record_of,
    stored_test,
    trial_artifacts,
)
from search.study.scores import Classification
from search.study.trial_facts import TrialFacts

MISSING = "—"


def _percent(value: object) -> str:
    return percent(value, MISSING)


@dataclass(frozen=True)
class Compared:
    """A study to compare and its artifact store (None when its folder is gone: only test scores show)."""

    study: optuna.Study
    store: FileSystemArtifactStore | None


def load_compared(url: str, names: Sequence[str], artifact_dir: Path | None) -> list[Compared]:
    """The `--compare` studies in the storage at `url`; an unknown name is a UserError listing the known ones."""
    compared = []
    for name in dict.fromkeys(names):  # a name given twice is one column
        try:
            study = load_existing_study(url, name)
        except UserError as exc:
            raise UserError(f"--compare: {exc}") from None
        try:
            store: FileSystemArtifactStore | None = artifact_store_for(study, artifact_dir)
        except UserError:
            store = None  # only the validation per-class fallback needs the files
        compared.append(Compared(study, store))
    return compared


def wall_time(study: optuna.Study) -> timedelta | None:
    """From the first trial's start to the last trial's end: what a reader waited, whatever the workers."""
    spans = [(t.datetime_start, t.datetime_complete) for t in study.get_trials(deepcopy=False)]
    ended = [(start, end) for start, end in spans if start is not None and end is not None]
    return max(end for _, end in ended) - min(start for start, _ in ended) if ended else None


def _kind(record: StudyRecord, best: FrozenTrial | None) -> str:
    try:
        return record.kind().name
    except UserError:  # a study not made by run_study.py
        return MISSING


def _trained_from(record: StudyRecord) -> str:
    """Where a study's networks started: a trial of another study, random weights, or a backbone's weights."""
    resolved = record.resolved
    if resolved is not None and resolved.source:
        return f"trial {resolved.source['trial']} ({resolved.source['kind']})"
    if resolved is not None and not stands_on_backbone(get_kind(resolved.kind)):
        return "random init"  # each trial built its own network
    return f"{record.spec.backbone} ({record.spec.pretrained})" if record.spec else MISSING


def _summary_row(study: optuna.Study, best: FrozenTrial | None) -> list[str]:
    record = record_of(study)
    test = stored_test(study)
    span = wall_time(study)
    return [
        study.study_name,
        _kind(record, best),
        _trained_from(record),
        record.data.name if record.data else MISSING,
        _percent(TrialFacts.of(best).val_accuracy) if best else MISSING,
        _percent(test["accuracy"]) if test else MISSING,
        str(finished_count(study)),
        str(timedelta(seconds=round(span.total_seconds()))) if span else MISSING,
    ]


def per_class_f1(compared: Compared, best: FrozenTrial | None, folder: Path) -> tuple[str, dict[str, float]]:
    """(source, F1 by class name): the stored test scores, else the best trial's validation artifact."""
    test = stored_test(compared.study)
    if test and test.get("per_class"):
        return "test", {c.name: c.f1 for c in Classification.from_record(test).per_class}
    artifact_id = trial_artifacts(compared.study, best).get(PER_CLASS_FILE) if best else None
    if compared.store is None or artifact_id is None:
        return "not stored", {}
    path = fetch_artifact(compared.store, artifact_id, folder / f"{compared.study.study_name}_{PER_CLASS_FILE}")
    if path is None:
        return "not stored", {}
    return "validation", {row["class"]: float(row["f1"]) for row in read_per_class(path)}


def comparison_lines(main: Compared, others: Sequence[Compared]) -> list[str]:
    """The "Comparison" section for `main` beside `others`; no lines when there are no others."""
    compared = [main, *(c for c in others if c.study.study_name != main.study.study_name)]
    if len(compared) < 2:
        return []
    bests = [best_completed(c.study) for c in compared]
    lines = ["## Comparison", ""]
    lines += markdown_table(
        (
            "study",
            "kind",
            "trained from",
            "data",
            "best val acc",
            "test acc",
            "finished trials",
            "wall time (first start to last end)",
        ),
        [_summary_row(c.study, best) for c, best in zip(compared, bests, strict=True)],
    )
    lines += [
        "Best val acc is the best trial's validation accuracy; test acc is that trial's stored held-out test score.",
        "",
        "### Per-class F1",
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="compare-") as tmp:
        scores = [per_class_f1(c, best, Path(tmp)) for c, best in zip(compared, bests, strict=True)]
    classes = list(dict.fromkeys(name for _, f1 in scores for name in f1))
    header = [
        "class",
        *(f"{c.study.study_name} ({source} F1)" for c, (source, _) in zip(compared, scores, strict=True)),
    ]
    rows = [[name, *(f"{f1[name]:.4f}" if name in f1 else MISSING for _, f1 in scores)] for name in classes]
    return [*lines, *markdown_table(header, rows)]
