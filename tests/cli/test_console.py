"""What a run prints: one line of choices per trial, the commands to look closer, the closing table."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from rich.console import Console

from search.cli.console import closing_message, dashboard_command, format_params, results_command, summary_table
from search.kinds import get_kind
from search.study.record import TEST_ATTR, completed_trials
from search.study.spec import StudySpec
from tests.results_study import FinishedStudy, finished_study

SECRET_URL = "postgresql+psycopg://optuna:s3cr@t@db.example:5432/studies"
MASKED_URL = "postgresql+psycopg://optuna:***@db.example:5432/studies"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> FinishedStudy:
    return finished_study(tmp_path_factory, "features")


def spec_of(study: FinishedStudy) -> StudySpec:
    return StudySpec(
        space="features", study_name=study.name, storage=study.storage, artifact_dir=study.artifact_dir, trials=4
    )


@pytest.mark.parametrize(
    ("kind", "params", "expected"),
    [
        (
            "finetune",
            {
                "cut": "block4",
                "head_depth": 1,
                "optimizer": "adam",
                "lr@adam": 0.004074,
                "batch_size": 16,
                "unfreeze_blocks": 0,
            },
            "cut=block4 unfreeze_blocks=0 optimizer=adam lr=0.0041 batch_size=16",
        ),
        (  # a user's own space, none of the shipped space's key parameters: all of them, as they come
            "finetune",
            {f"p{i}": i for i in range(8)},
            "p0=0 p1=1 p2=2 p3=3 p4=4 p5=5 p6=6 p7=7",
        ),
        (
            "features",
            {
                "feat_use_block3": True,
                "feat_pool_block3": "avg",
                "feat_use_block5": False,
                "feat_use_conv_head": True,
                "feat_pca": True,
                "pca_dims": 32,
                "classifier": "svm",
                "svm_c": 0.25,
                "svm_kernel": "linear",
            },
            "layers=block3+conv_head pca_dims=32 classifier=svm svm_c=0.25 svm_kernel=linear",
        ),
    ],
    ids=["finetune", "finetune-unknown-params", "features"],
)
def test_format_params_shows_what_tells_trials_of_a_kind_apart(
    kind: str, params: dict[str, Any], expected: str
) -> None:
    assert format_params(params, get_kind(kind)) == expected


def test_dashboard_command_omits_defaults() -> None:
    defaults = StudySpec()
    assert dashboard_command(defaults.storage, defaults.artifact_dir) == "python -m search dashboard"
    assert dashboard_command(defaults.storage) == "python -m search dashboard"


def test_dashboard_command_masks_the_password_and_quotes(tmp_path: Path) -> None:
    folder = tmp_path / "my artifacts"
    command = dashboard_command(SECRET_URL, folder)
    assert "s3cr" not in command
    assert command == f"python -m search dashboard --storage '{MASKED_URL}' --artifact-dir '{folder}'"


def test_a_password_with_a_slash_is_masked_too() -> None:
    command = dashboard_command("postgresql://optuna:pa/ss@db.example/studies")
    assert "pa/ss" not in command


def test_results_command_omits_the_default_storage_and_masks_a_password() -> None:
    assert (
        results_command(StudySpec(study_name="digits run"), "report")
        == "python -m search report --study-name 'digits run'"
    )
    command = results_command(StudySpec(study_name="s1", storage=SECRET_URL), "report")
    assert command == f"python -m search report --study-name s1 --storage '{MASKED_URL}'"


def test_closing_message_gives_the_best_trials_test_accuracy(study: FinishedStudy) -> None:
    loaded = study.load()
    test = loaded.user_attrs[TEST_ATTR]
    assert test["trial"] == loaded.best_trial.number
    message = closing_message(loaded, spec_of(study), 12.4, get_kind("features"))
    lines = message.splitlines()
    assert lines[0] == "finished in 12s."
    config = loaded.best_trial.user_attrs["config"]
    assert lines[1].startswith(f"Best trial {loaded.best_trial.number} (") and "frozen layer" in lines[1], lines[1]
    assert f"on {len(config['layers'])} frozen layer" in lines[1]
    assert lines[2] == (
        f"Best trial {loaded.best_trial.number} on the {test['images']} held-out test images: "
        f"accuracy {test['accuracy']:.2%}, macro F1 {test['macro_f1']:.3f}."
    )
    assert f"  {dashboard_command(study.storage, study.artifact_dir)}" in lines
    assert f"  {results_command(spec_of(study), 'report')}" in lines


def test_closing_message_is_silent_about_a_test_of_a_trial_no_longer_best(study: FinishedStudy, tmp_path: Path) -> None:
    # SQLite's backup, not a file copy: the study's latest writes may still be in its WAL file
    with (
        closing(sqlite3.connect(study.folder / "optuna.db")) as source,
        closing(sqlite3.connect(tmp_path / "optuna.db")) as target,
    ):
        source.backup(target)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    copy = optuna.load_study(study_name=study.name, storage=storage)
    before = copy.best_trial.number
    beats = copy.best_value - 1 if copy.direction == optuna.study.StudyDirection.MINIMIZE else copy.best_value + 1
    copy.add_trial(
        optuna.trial.create_trial(params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)}, value=beats)
    )
    assert copy.best_trial.number != before and copy.user_attrs[TEST_ATTR]["trial"] == before
    message = closing_message(copy, StudySpec(study_name=study.name, storage=storage), 3.0, get_kind("features"))
    assert "held-out" not in message and "accuracy" not in message
    assert message.startswith("finished in 3s.\nInspect the trials")


def test_summary_table_lists_the_best_trials_best_first(study: FinishedStudy) -> None:
    loaded = study.load()
    done = [t for t in loaded.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) >= 2, "the shared study must have trials to order"
    reverse = loaded.direction == optuna.study.StudyDirection.MAXIMIZE
    expected = [t.number for t in sorted(done, key=lambda t: t.value or 0.0, reverse=reverse)]
    console = Console(record=True, width=250, color_system=None)
    console.print(summary_table(loaded, spec_of(study), get_kind("features")))
    text = console.export_text()
    assert f"best trials of {study.name} ({len(done)} complete)" in text
    header = [
        cell.strip() for cell in next(line for line in text.splitlines() if line.startswith("┃")).split("┃")[1:-1]
    ]
    body = [[cell.strip() for cell in line.split("│")[1:-1]] for line in text.splitlines() if line.startswith("│")]
    assert header == ["trial", "val acc", "val loss", "epochs", "seconds", "ms/image", "size", "params"]
    assert [int(row[0]) for row in body] == expected[:5]
    by_number = {t.number: t for t in done}
    for row in body:
        trial = by_number[int(row[0])]
        assert row[1] == f"{trial.user_attrs['val_accuracy']:.2%}"
        assert row[2] == f"{trial.user_attrs['val_loss']:.4f}"
        assert row[5] == f"{trial.user_attrs['latency_ms_b1']:.1f}"
        assert row[6] == f"{trial.user_attrs['size_bytes'] * 1e-6:.3g} MB"
        assert row[7] == format_params(trial.params, get_kind("features"))
        assert row[7].startswith("layers=")


def test_summary_table_shows_at_most_top_trials(study: FinishedStudy) -> None:
    loaded = study.load()
    console = Console(record=True, width=250, color_system=None)
    console.print(summary_table(loaded, spec_of(study), get_kind("features"), top=1))
    body = [line for line in console.export_text().splitlines() if line.startswith("│")]
    assert len(body) == 1
    assert body[0].split("│")[1].strip() == str(completed_trials(loaded)[0].number)
