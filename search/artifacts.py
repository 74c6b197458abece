"""Per-trial artifacts through Optuna's artifact store, so optuna-dashboard shows them on each trial."""

from __future__ import annotations

from pathlib import Path

from optuna.artifacts import FileSystemArtifactStore

from search.errors import UserError


def open_artifact_store(path: Path) -> FileSystemArtifactStore:
    """The study's artifact folder (created when missing): one store shared by every worker."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create --artifact-dir {path}: {exc.strerror}; pick a writable folder") from None
    return FileSystemArtifactStore(str(path))
