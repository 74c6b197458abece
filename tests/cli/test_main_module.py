"""`python -m search` as a user runs it, in a real process from the repository root."""

from __future__ import annotations

from pathlib import Path

import optuna

from tests.helpers import ROOT
from tests.results_study import run_search

COMMANDS = ("report", "dashboard", "export", "predict")


def test_help_lists_every_command() -> None:
    done = run_search(ROOT, "--help", timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m search")
    for command in COMMANDS:
        assert f"    {command} " in done.stdout, command
    assert done.stderr == ""


def test_a_missing_study_is_one_error_line_and_exit_code_2(tmp_path: Path) -> None:
    database = tmp_path / "none.db"
    done = run_search(ROOT, "report", "--study-name", "x", "--storage", f"sqlite:///{database}", timeout=120)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error:") and str(database) in lines[0]
    assert "Traceback" not in done.stderr
    assert not database.exists(), "a command that reads results creates no database"


def test_an_unknown_study_name_in_a_real_database_is_named(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="other", storage=storage)
    done = run_search(ROOT, "report", "--study-name", "x", "--storage", storage, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "'x'" in lines[0], done.stderr
