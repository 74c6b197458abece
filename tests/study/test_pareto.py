"""--objectives accuracy,latency: a two-objective Optuna study, unpruned, whose front a user exports from."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from search.cli.results import main as results_main
from search.cli.run import main
from search.errors import UserError
from search.study.record import best_completed, completed_trials
from search.study.spec import StudySpec
from search.study.trial_facts import LATENCY_MS_B1, TrialFacts
from tests.results_study import STUDY_FLAGS

MAXIMIZE, MINIMIZE = optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE


def test_a_pareto_study_trades_accuracy_against_latency_and_exports_from_its_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = f"sqlite:///{tmp_path / 'p.db'}"
    common = ["--space", "finetune", "--trials", "4", *STUDY_FLAGS, "--storage", storage, "--study-name", "pareto"]
    common += ["--artifact-dir", str(tmp_path / "artifacts"), "--objectives", "accuracy,latency"]
    assert main(common) == 0
    out = capsys.readouterr().out
    assert "a Pareto study: no pruning" in " ".join(out.split())
    assert "Pareto front (val accuracy, ms/image at batch 1), fastest first: #" in out

    study = optuna.load_study(study_name="pareto", storage=storage)
    assert study.directions == [MAXIMIZE, MINIMIZE]
    done = completed_trials(study)
    assert len(done) == 4
    for trial in done:
        facts = TrialFacts.of(trial)
        assert trial.values == [facts.val_accuracy, facts.latency_ms_b1] and LATENCY_MS_B1 in trial.user_attrs
        assert trial.intermediate_values == {}, "Optuna takes no intermediate value from a multi-objective trial"
    best = best_completed(study)
    assert best is not None and best.values[0] == max(t.values[0] for t in done), "the best is the most accurate"
    front = {t.number for t in study.best_trials}
    assert best.number in front
    fastest = min(study.best_trials, key=lambda t: t.values[1])
    assert "checkpoint_artifact_id" in fastest.user_attrs, "kept: among the ten best, as four trials all are"
    export = ["export", "--study-name", "pareto", "--storage", storage, "--trial", str(fastest.number)]
    assert results_main([*export, "--out", str(tmp_path / "fastest")]) == 0


def test_objectives_other_than_accuracy_or_accuracy_and_latency_are_one_line_errors() -> None:
    assert StudySpec(objectives=("accuracy", "latency")).directions == ["maximize", "minimize"]
    assert StudySpec().directions == ["maximize"] and not StudySpec().pareto
    for wrong in [("latency",), ("accuracy", "size")]:
        with pytest.raises(UserError, match=r"pass accuracy \(the default\) or accuracy,latency"):
            StudySpec(objectives=wrong)
