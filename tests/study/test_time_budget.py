"""--time-budget end to end: a study that fits its budget and says what it spent, and one too small to start."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest

from search.cli.run import main
from search.study.record import STAGE_COSTS_ATTR
from tests.cli.test_cli import STUDY, load, run_cli
from tests.helpers import FAST, FEW_DIGITS

BUDGET = 40  # seconds: the command's start-up (about 8 s of imports) and a few trials of four digits at 32 px


def test_a_study_ends_within_its_budget_and_says_what_it_spent(tmp_path: Path) -> None:
    started = time.monotonic()
    done = run_cli(tmp_path, "--time-budget", str(BUDGET), "--trials", "1000", *FAST, *FEW_DIGITS)
    wall = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    assert wall < BUDGET + 5, f"the command took {wall:.0f} s of a {BUDGET} s budget"
    assert f"of a {BUDGET}s budget" in done.stdout
    study = load(tmp_path, STUDY)
    finished = [
        t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    assert 2 <= len(finished) < 1000, "the budget, not --trials, ended it, after the probe and the standard recipe"
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert "efficientnet_lite0@cpu" in study.user_attrs[STAGE_COSTS_ATTR], (
        "the stage timing the plan came from is on the study"
    )
    assert study.user_attrs["test_evaluation"]["trial"] == study.best_trial.number, "scored on test within the budget"


def test_a_budget_too_small_for_the_first_trials_is_one_line_naming_the_smallest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["--time-budget", "1", "--trials", "5", *FAST, *FEW_DIGITS]) == 2
    err = capsys.readouterr().err
    assert "--time-budget 1 is too small for this study here" in err and "give at least" in err
    assert len(err.strip().splitlines()) == 1
