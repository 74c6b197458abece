"""Deployment constraints (--max-latency-ms, --max-size-mb): infeasible trials are kept, marked, never the best."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from search.cli.results import main as results_main
from search.cli.run import main
from search.errors import UserError
from search.results.reading import best_trial
from search.study.record import TEST_ATTR, best_completed, completed_trials
from search.study.spec import LATENCY_LIMIT, SIZE_LIMIT, StudySpec
from search.study.trial_facts import SIZE_BYTES, feasible
from tests.results_study import STUDY_FLAGS


def test_the_best_trial_is_the_best_feasible_one(tmp_path: Path) -> None:
    """On a real SQLite study: Optuna's best_trial and ours agree that an infeasible trial never wins."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'c.db'}")
    for loss, over in [(0.1, 5.0), (0.3, -1.0), (0.2, 0.5), (0.4, 0.0)]:  # the lowest loss is over its limit
        trial = study.ask()
        trial.set_constraint(LATENCY_LIMIT, over)
        study.tell(trial, loss)
    order = [t.number for t in completed_trials(study)]
    assert order == [1, 3, 0, 2], "feasible ones first, best first; then the infeasible"
    best = best_completed(study)
    assert best is not None and best.number == study.best_trial.number == 1
    assert not feasible(study.trials[0]) and feasible(study.trials[3])  # zero is within the limit


def test_a_study_where_no_trial_fits_says_so_and_keeps_every_trial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(UserError, match="--max-latency-ms must be a positive number"):
        StudySpec(max_latency_ms=0)
    assert StudySpec(max_size_mb=5).limits == {SIZE_LIMIT: 5}
    storage = f"sqlite:///{tmp_path / 'c.db'}"
    common = ["--space", "features", "--trials", "3", *STUDY_FLAGS, "--storage", storage]
    common += ["--artifact-dir", str(tmp_path / "artifacts"), "--cache-dir", str(tmp_path / "cache")]
    assert main([*common, "--study-name", "tiny", "--max-size-mb", "0.000001"]) == 0
    assert "No complete trial met --max-size-mb 1e-06" in capsys.readouterr().out
    study = optuna.load_study(study_name="tiny", storage=storage)
    done = completed_trials(study)
    assert len(done) == 3 and not any(feasible(t) for t in done)
    assert all(t.constraints[SIZE_LIMIT] == pytest.approx(t.user_attrs[SIZE_BYTES] / 1e6 - 1e-6) for t in done)
    assert best_completed(study) is None and TEST_ATTR not in study.user_attrs, "nothing infeasible is scored on test"
    assert not any("checkpoint_artifact_id" in t.user_attrs for t in done), "no infeasible model is kept as the best"
    with pytest.raises(UserError, match="meets its deployment constraints"):
        best_trial(study)
    assert results_main(["export", "--study-name", "tiny", "--storage", storage, "--out", str(tmp_path / "m")]) == 2

    assert main([*common, "--study-name", "roomy", "--max-size-mb", "1000"]) == 0
    roomy = optuna.load_study(study_name="roomy", storage=storage)
    assert all(feasible(t) for t in completed_trials(roomy)) and TEST_ATTR in roomy.user_attrs
