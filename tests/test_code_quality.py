"""The code stays ruff- and mypy-clean: part of the one test command, so CI checks it too."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

TARGETS = ["search", "spaces", "tests", "bench", "run_study.py"]


def test_ruff_lint_and_format() -> None:
    for args in (["check"], ["format", "--check"]):
        done = subprocess.run([sys.executable, "-m", "ruff", *args, *TARGETS], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


MYPY = pytest.StashKey[subprocess.Popen[str]]()


def start_mypy() -> subprocess.Popen[str]:
    """mypy over the tree, at low priority: a minute of one core, which the suite leaves idle in its many waits."""
    return subprocess.Popen(
        [sys.executable, "-m", "mypy", *TARGETS],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: os.nice(10),
    )


def test_mypy(pytestconfig: pytest.Config) -> None:
    """Started when the suite is collected (conftest.py), so its minute overlaps the other tests."""
    checker = pytestconfig.stash.get(MYPY, None) or start_mypy()
    output, _ = checker.communicate(timeout=900)
    assert checker.returncode == 0, output
