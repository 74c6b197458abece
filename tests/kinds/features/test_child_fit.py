"""Classical fits in a child process: results come back, errors come back, and a stop ends a native fit at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from search.kinds.features.child_fit import in_child
from search.training.core import TrialFailed
from tests.helpers import ROOT

ANSWER_SECONDS = 2.0  # what the issue asks: a stop is answered within 2 s, native fit or not

# A libsvm fit that runs for minutes without returning to the interpreter: an RBF SVM with a huge C on
# random labels. `in_process` runs it here (the way fits ran before); otherwise it runs in a child.
SLOW_FIT = """
import os, signal, sys
from contextlib import closing
import numpy as np
from sklearn.svm import SVC
from search.cli.exit import exit_promptly
from search.cli.run import _interrupt_on_sigterm
from search.kinds.features.child_fit import in_child

signal.signal(signal.SIGTERM, _interrupt_on_sigterm)  # what run_study.py installs
rng = np.random.default_rng(0)
inputs, labels = rng.normal(size=(20000, 30)), rng.integers(0, 2, 20000)

def fit():
    print("fitting", os.getpid(), flush=True)
    yield SVC(C=1e4, gamma=0.3).fit(inputs, labels)  # over 20 s on one core

try:
    if sys.argv[1] == "in_process":
        list(fit())
    else:
        with closing(in_child(fit)) as stages:
            list(stages)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    exit_promptly(130)  # as run_study.py leaves
"""


def start_slow_fit(where: str) -> tuple[subprocess.Popen[str], int]:
    """The script, once its fit has started; returns the process and the pid doing the fit."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_FIT, where], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("fitting"), line
    time.sleep(1.0)  # well inside libsvm by now
    return process, int(line.split()[1])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has exited: only its parent's wait is missing
        return stat.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.skipif(sys.platform != "linux", reason="fork and /proc: the child fit is Linux's")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_during_a_native_fit_is_answered_within_two_seconds(signum: signal.Signals) -> None:
    process, fitter = start_slow_fit("child")
    try:
        assert fitter != process.pid, "the fit runs in a child"
        sent = time.monotonic()
        process.send_signal(signum)
        output, _ = process.communicate(timeout=30)
        answered = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130 and "interrupted" in output, output
    assert answered < ANSWER_SECONDS, f"answered after {answered:.1f}s"
    deadline = time.monotonic() + 2
    while alive(fitter) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(fitter), "the child fit outlived its parent"


@pytest.mark.skipif(sys.platform != "linux", reason="fork and /proc: the child fit is Linux's")
def test_the_same_fit_in_process_ignores_the_stop_for_longer_so_the_test_above_can_fail() -> None:
    process, fitter = start_slow_fit("in_process")
    try:
        assert fitter == process.pid
        process.send_signal(signal.SIGINT)
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=ANSWER_SECONDS + 1)
    finally:
        process.kill()
        process.wait()


def numbers(count: int) -> Iterator[tuple[int, int]]:
    for number in range(count):
        yield number, os.getpid()


def test_results_come_back_in_order_from_another_process() -> None:
    results = list(in_child(lambda: numbers(3)))
    assert [number for number, _ in results] == [0, 1, 2]
    assert {pid for _, pid in results} != {os.getpid()}


def failing() -> Iterator[int]:
    yield 1
    raise ValueError("the fit went wrong")


def test_an_error_in_the_child_is_raised_in_the_parent() -> None:
    received = []
    with pytest.raises(ValueError, match="the fit went wrong"):
        for item in in_child(failing):
            received.append(item)
    assert received == [1]


def dies() -> Iterator[int]:
    yield 1
    os._exit(3)


def test_a_child_that_dies_fails_the_trial_with_its_exit_code() -> None:
    with pytest.raises(TrialFailed, match="died \\(exit code 3\\)"):
        list(in_child(dies))


def forever() -> Iterator[int]:
    yield os.getpid()
    while True:
        time.sleep(0.1)


@pytest.mark.skipif(sys.platform != "linux", reason="fork and /proc: the child fit is Linux's")
def test_stopping_early_kills_the_child(tmp_path: Path) -> None:
    with closing(in_child(forever)) as stages:
        child = next(stages)
        assert alive(child)
    assert not alive(child)
