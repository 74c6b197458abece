"""`python -m search report` on finished finetune and features studies, and on studies it cannot report."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest

from search.cli.results import main
from search.study.record import TEST_ATTR
from tests.results_study import FinishedStudy, finished_study, png_ok

SECTIONS = (
    "# Study report: ",
    "## Methods compared",
    "## Figures",
    "## Cost to run",
    "## Per-class precision, recall and F1",
    "## Top trials",
    "## By choice",
    "## Parallel coordinates",
    "## Settings",
)
FIGURES = (
    "history.png",
    "importances.png",
    "parallel.png",
    "best_val_confusion_matrix.png",
    "test_confusion_matrix.png",
)


@pytest.fixture(scope="module", params=["finetune", "features"])
def study(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> FinishedStudy:
    return finished_study(tmp_path_factory, request.param)


def test_report_has_every_section_and_inline_html(study: FinishedStudy, tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert main(["report", *study.args(), "--out", str(out)]) == 0
    markdown = (out / "report.md").read_text()
    headings = [line for line in markdown.splitlines() if line.startswith("#")]
    for section in SECTIONS:
        assert any(h.startswith(section) for h in headings), (section, headings)
    assert "not available" not in markdown, markdown
    figures = re.findall(r"!\[[^]]*\]\(figures/([^)]+)\)", markdown)
    assert set(FIGURES) <= set(figures)
    for name in figures:
        png_ok(out / "figures" / name)

    loaded = study.load()
    test = loaded.user_attrs[TEST_ATTR]
    assert test["trial"] == loaded.best_trial.number
    assert f"| accuracy | {loaded.best_trial.user_attrs['val_accuracy']:.2%} | {test['accuracy']:.2%} |" in markdown
    first_screen = markdown.split("## Methods compared")[0]  # the answer comes before anything else
    assert f"**Best model**: trial {loaded.best_trial.number}, " in first_screen
    assert "The study ran " in first_screen and "Against the standard first trials" in first_screen
    assert "```" not in markdown and "{'" not in markdown and '{"' not in markdown, "no raw dump or JSON"
    assert "=" not in markdown.split("## Top trials")[1].split("##")[0], "configurations in words, not name=value"
    main_choice = "### unfreeze_blocks" if study.name.endswith("finetune") else "### classifier"
    assert main_choice in headings
    curves = "![learning curves](figures/best_curves.png)" in markdown
    assert curves == (len(loaded.best_trial.user_attrs["history"]) > 1), (
        "curves drawn exactly when the best trial has epochs to join"
    )

    html = (out / "report.html").read_text()
    assert 'src="figures/' not in html, "every figure is inline"
    assert html.count('src="data:image/png;base64,') == len(figures)
    assert "<table>" in html and "Study report: " in html


def test_a_study_without_a_completed_trial_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    empty = optuna.create_study(study_name="empty", storage=storage)
    empty.tell(empty.ask(), state=optuna.trial.TrialState.PRUNED)
    assert main(["report", "--study-name", "empty", "--storage", storage, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: study 'empty' has no completed trial yet (1 pruned); run run_study.py on it until one completes"
    )
    assert not (tmp_path / "r").exists()

    assert main(["report", "--study-name", "nope", "--storage", storage]) == 2
    err = capsys.readouterr().err
    assert "no study 'nope' in sqlite:///" in err and "studies there: empty" in err
    missing = f"sqlite:///{tmp_path / 'missing.db'}"
    assert main(["report", "--study-name", "empty", "--storage", missing]) == 2
    assert "no study database at" in capsys.readouterr().err
    assert not (tmp_path / "missing.db").exists(), "reading creates nothing"
