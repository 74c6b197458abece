"""`python -m search report --compare`: two real studies on the digits, side by side in one report."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from search.cli import results, run
from search.study.record import TEST_ATTR, record_of
from tests.helpers import FAST

STORAGE = "sqlite:///studies/optuna.db"  # run_study.py's default, under the module's own folder
FINETUNE, FEATURES = "cmp-finetune", "cmp-features"
# Each study sees six digits, two of them shared: a class a study lacks shows a dash, and each runs in seconds
FIRST, LAST = "0,1,2,3,4,5", "4,5,6,7,8,9"
# A finetune space of the user's own: the built-in one tries its augmented recipe first, a minute on 2 cores
PROBE = """from search.training.configs import FinetuneConfig

def suggest(trial, ctx):
    return FinetuneConfig(
        cut=ctx.cut_points[-1], head_width=64, head_depth=0, head_batchnorm=False, head_dropout=0.0,
        weight_decay=0.0, optimizer="adam", lr=trial.suggest_float("lr", 1e-2, 5e-2, log=True), momentum=0.0,
        batch_size=64, unfreeze_blocks=0, backbone_lr_factor=1.0, head_only_epochs=0, augment="none",
    )
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Both studies, run once by run_study.py's main into one storage, with the module's cwd inside it."""
    path = tmp_path_factory.mktemp("compare")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(path)
        (path / "probe.py").write_text(PROBE)
        common = ["--trials", "2", *FAST, "--seed", "0"]
        assert run.main(["--space", "probe.py", "--study-name", FINETUNE, "--classes", FIRST, *common]) == 0
        assert run.main(["--space", "features", "--study-name", FEATURES, "--classes", LAST, *common]) == 0
        yield path


def _report(folder: Path, *compare: str) -> str:
    out = folder / "report"
    assert results.main(["report", "--study-name", FINETUNE, "--compare", *compare, "--out", str(out)]) == 0
    markdown = (out / "report.md").read_text()
    assert "## Comparison" in markdown
    return markdown.split("## Comparison", 1)[1]


def _summary_cells(study: optuna.Study) -> str:
    """The start of a study's row, with its real best-validation and test figures."""
    record = record_of(study)
    kind = "finetune" if study.study_name == FINETUNE else "features"
    assert record.data is not None
    val = f"{study.best_trial.user_attrs['val_accuracy']:.2%}"
    test = f"{study.user_attrs[TEST_ATTR]['accuracy']:.2%}" if study.user_attrs.get(TEST_ATTR) else "—"
    trained_from = "efficientnet_lite0 (imagenet)"  # both stand on the default backbone's ImageNet weights
    return f"| {study.study_name} | {kind} | {trained_from} | {record.data.name} | {val} | {test} | 2 | "


def _rows(section: str, heading: str) -> list[list[str]]:
    """The body rows of the first table after `heading`, as cells."""
    table = section.split(heading, 1)[1].strip().split("\n\n")[0].splitlines()
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table[2:]]


def test_report_compares_studies_side_by_side(folder: Path) -> None:
    section = _report(folder, FEATURES)
    finetune = optuna.load_study(study_name=FINETUNE, storage=STORAGE)
    features = optuna.load_study(study_name=FEATURES, storage=STORAGE)
    for study in (finetune, features):
        assert _summary_cells(study) in section, (_summary_cells(study), section)
    assert "wall time (first start to last end)" in section

    assert f"| class | {FINETUNE} (test F1) | {FEATURES} (test F1) |" in section
    rows = {row[0]: row[1:] for row in _rows(section, "### Per-class F1")}
    assert sorted(rows) == [str(d) for d in range(10)], "one row per digit class"
    for scores in finetune.user_attrs[TEST_ATTR]["per_class"]:
        assert rows[scores["name"]][0] == f"{scores['f1']:.4f}"
    assert [name for name, cells in rows.items() if cells[0] == "—"] == ["6", "7", "8", "9"]
    assert [name for name, cells in rows.items() if cells[1] == "—"] == ["0", "1", "2", "3"]

    html = (folder / "report" / "report.html").read_text()
    assert "<h2>Comparison</h2>" in html and f"<td>{FEATURES}</td>" in html


def test_without_a_test_evaluation_the_validation_scores_show(folder: Path) -> None:
    features = optuna.load_study(study_name=FEATURES, storage=STORAGE)
    stored = features.user_attrs[TEST_ATTR]
    features.set_user_attr(TEST_ATTR, None)  # as if the study had been interrupted before its test run
    try:
        section, expected = _report(folder, FEATURES), _summary_cells(features)
    finally:
        features.set_user_attr(TEST_ATTR, stored)
    assert expected.endswith("| — | 2 | ") and expected in section, (expected, section)
    assert f"| {FEATURES} (validation F1) |" in section
    rows = {row[0]: row[1:] for row in _rows(section, "### Per-class F1")}
    assert [name for name, cells in rows.items() if cells[1] != "—"] == LAST.split(",")


def test_an_unknown_study_to_compare_is_a_one_line_error(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = folder / "never"
    assert results.main(["report", "--study-name", FINETUNE, "--compare", FEATURES, "nope", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --compare: no study 'nope' in sqlite:///studies/optuna.db;"), err
    assert err.endswith(f"studies there: {FEATURES}, {FINETUNE}") and "\n" not in err, err
    assert not out.exists(), "nothing is written before the names are checked"
