"""Reading a finished study back: the study, its best trials, its artifact store and its data.

Used by the result commands (report, export, dashboard), which must never create what they read:
a mistyped storage path or study name is an error that says what exists, not a new empty study.
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import FrozenTrial, TrialState

from search.errors import UserError
from search.study.record import best_completed, completed_trials, record_of
from search.study.spec import StudySpec
from search.study.storage import mask_password, open_storage, parse_storage_url

DEFAULT_STORAGE = StudySpec().storage
DEFAULT_ARTIFACT_DIR = StudySpec().artifact_dir


def open_existing_storage(url: str) -> optuna.storages.RDBStorage:
    """The study database at `url`; a SQLite file that does not exist is refused, not created."""
    parsed = parse_storage_url(url)  # a malformed URL: the same one-line error as run_study.py's
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(str(parsed.database)).expanduser()
        if not path.is_file():
            raise UserError(
                f"no study database at {path} (--storage {mask_password(url)}); run run_study.py first or pass the --storage it used"
            )
    return open_storage(url)


def load_existing_study(url: str, name: str) -> optuna.Study:
    """A study that exists in the storage; an unknown name lists the names there."""
    storage = open_existing_storage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False))
        known = f"studies there: {', '.join(names)}" if names else "it holds no study yet"
        raise UserError(f"no study '{name}' in {mask_password(url)}; {known}") from None


def best_trial(study: optuna.Study) -> FrozenTrial:
    """The best (feasible) completed trial; a study without one is a user-facing error, not a ValueError."""
    done = completed_trials(study)
    best = best_completed(study)
    if done and best is None:
        raise UserError(
            f"no complete trial of study '{study.study_name}' meets its deployment constraints "
            "(--max-latency-ms, --max-size-mb); pass --trial N for one of them, or run a study with looser ones"
        )
    if best is None:
        counts = {state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,))) for state in TrialState}
        held = ", ".join(f"{n} {state}" for state, n in counts.items() if n) or "no trials"
        raise UserError(
            f"study '{study.study_name}' has no completed trial yet ({held}); run run_study.py on it until one completes"
        )
    return best


def artifact_store_for(study: optuna.Study, artifact_dir: Path | None) -> FileSystemArtifactStore:
    """The given folder, else the one the study was run with; it must exist (reading creates nothing)."""
    spec = record_of(study).spec
    path = artifact_dir or (spec.artifact_dir if spec else DEFAULT_ARTIFACT_DIR)
    if not path.is_dir():
        raise UserError(
            f"artifact folder {path} of study '{study.study_name}' does not exist; pass the --artifact-dir it was run with"
        )
    return FileSystemArtifactStore(str(path))
