"""The code stays ruff- and mypy-clean: part of the one test command, so CI checks it too."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT

TARGETS = ["search", "spaces", "tests", "bench", "run_study.py"]


def test_ruff_lint_and_format() -> None:
    for args in (["check"], ["format", "--check"]):
        done = subprocess.run([sys.executable, "-m", "ruff", *args, *TARGETS], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_mypy() -> None:
    done = subprocess.run([sys.executable, "-m", "mypy", *TARGETS], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
