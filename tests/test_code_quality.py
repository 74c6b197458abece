"""The code stays ruff- and mypy-clean: part of the one test command, so CI checks it too."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import CHECKED, MYPY, ROOT, start_mypy


def test_ruff_lint_and_format() -> None:
    for args in (["check"], ["format", "--check"]):
        done = subprocess.run([sys.executable, "-m", "ruff", *args, *CHECKED], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_mypy(pytestconfig: pytest.Config) -> None:
    """Started when the suite is collected (conftest.py), so its minute overlaps the other tests."""
    checker = pytestconfig.stash.get(MYPY, None) or start_mypy()
    output, _ = checker.communicate(timeout=900)
    assert checker.returncode == 0, output
