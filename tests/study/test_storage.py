"""Study storage: fresh SQLite databases opened by several processes at once, and masked passwords."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna

from search.study.storage import mask_password, open_storage
from tests.helpers import ROOT


def test_processes_opening_a_fresh_sqlite_database_at_once_all_succeed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'optuna.db'}"
    code = "import sys; from search.study.storage import open_storage; open_storage(sys.argv[1])"
    workers = [
        subprocess.Popen([sys.executable, "-c", code, url], cwd=ROOT, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    results = [(worker.wait(timeout=120), worker.stderr.read() if worker.stderr else "") for worker in workers]
    assert all(code == 0 for code, _ in results), results
    study = optuna.create_study(storage=open_storage(url), study_name="shared")
    assert study.study_name == "shared"


def test_passwords_never_shown() -> None:
    assert mask_password("postgresql://bob:s3cr%40t@db.lab:5432/optuna") == "postgresql://bob:***@db.lab:5432/optuna"
    assert mask_password("postgresql+psycopg://bob@db/optuna") == "postgresql+psycopg://bob@db/optuna"
    assert mask_password("sqlite:///studies/optuna.db") == "sqlite:///studies/optuna.db"
    assert mask_password("postgresql://bob:p@ss@db/optuna") == "postgresql://bob:***@db/optuna"  # unencoded @
