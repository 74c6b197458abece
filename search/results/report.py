"""`python -m search report`: one Markdown file (and an HTML twin with images inline) per study.

It reads like the lab reports users wrote by hand, answer first: the best model in words with its
validation and test figures, latency, size and the study's wall time, and how it compares with the
recipes every study starts from; then the methods compared, the figures a reader looks at (curves,
confusion matrix, history, importances, accuracy against latency), per-class scores, the top trials
in words, the choices compared, and the settings that differ from the defaults.
"""

from __future__ import annotations

import statistics
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: Optuna's matplotlib plots use it, and there is no display

import optuna
import torch
from matplotlib import pyplot as plt
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import FrozenTrial, TrialState

from search.errors import UserError
from search.results.answer import section_answer, section_methods, section_settings, trial_words
from search.results.compare import Compared, comparison_lines
from search.results.costs import section_costs
from search.results.ensemble_section import section_ensemble
from search.results.html import to_html
from search.results.reading import best_trial
from search.results.sections import Report, data_record, metric_name, num
from search.results.text import markdown_table, percent
from search.study.artifacts import CONFUSION_FILE, PER_CLASS_FILE, fetch_artifact, read_per_class
from search.study.evaluation import evaluate_on_test, stored_test_part
from search.study.plots import DPI, plot_confusion, plot_curves
from search.study.record import StudyRecord, completed_trials, record_of, trial_artifacts
from search.study.scores import Classification
from search.study.trial_facts import TrialFacts, feasible, objective_value
from spaces import get_space

MAX_GROUPS = 6  # tables in "By choice"
MAX_GROUP_VALUES = 8  # an integer parameter with more values than this is a knob, not a choice
TOP_TRIALS = 10
PARALLEL_PARAMS = 8  # the most important ones; more lines make the plot unreadable


def _section_top(report: Report, study: optuna.Study, done: list[FrozenTrial]) -> None:
    report.add("## Top trials", "")
    rows = []
    for rank, trial in enumerate(done[:TOP_TRIALS], start=1):
        facts = TrialFacts.of(trial)
        rows.append(
            (
                rank,
                trial.number,
                percent(facts.val_accuracy),
                num(facts.val_loss),
                facts.epochs_run if facts.epochs_run is not None else "-",
                f"{facts.seconds:.1f}" if facts.seconds is not None else "-",
                f"{facts.latency_ms_b1:.1f}" if facts.latency_ms_b1 is not None else "-",
                trial_words(report, trial) + ("" if feasible(trial) else " (infeasible: over a deployment constraint)"),
            )
        )
    header = ("rank", "trial", "val acc", "val loss", "epochs", "seconds", "ms/image", "configuration")
    report.add(*markdown_table(header, rows))


def _order(value: object) -> tuple[int, float, str]:
    """Numbers in numeric order, then everything else by its text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def metric_target(study: optuna.Study) -> Callable[[FrozenTrial], float] | None:
    """What Optuna's importances and plots read: the trial's value, or in a Pareto study its metric (the first)."""
    if len(study.directions) == 1:
        return None
    return lambda trial: trial.values[0]


def param_importances(study: optuna.Study) -> tuple[dict[str, float], str]:
    """fANOVA importances (seeded, so a report is reproducible), or ({}, why) when the study is too small."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
            return optuna.importance.get_param_importances(study, evaluator=evaluator, target=metric_target(study)), ""
    except (ValueError, RuntimeError) as exc:
        return {}, str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _main_choices(record: StudyRecord, study: optuna.Study) -> tuple[str, ...]:
    """The choices the study's space names to compare first; other low-cardinality parameters follow.

    A user's space file that is gone (or now fails to import) names none: the report ranks by importance.
    """
    try:
        return get_space(record.made.space).main_choices
    except UserError:
        return ()


def choice_params(study: optuna.Study, importances: dict[str, float], main_choices: tuple[str, ...]) -> list[str]:
    """Parameters that are choices (categorical, or integers with few values): the main choices, then
    the most important others, at most MAX_GROUPS in all (a features space has a choice per layer)."""
    seen: dict[str, set[Any]] = {}
    kinds: dict[str, bool] = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        for name, value in trial.params.items():
            seen.setdefault(name, set()).add(value)
            distribution = trial.distributions[name]
            kinds[name] = isinstance(distribution, optuna.distributions.CategoricalDistribution) or (
                isinstance(distribution, optuna.distributions.IntDistribution) and not distribution.log
            )
    names = [n for n in seen if kinds[n] and 1 < len(seen[n]) <= MAX_GROUP_VALUES]
    main = [n for n in main_choices if n in names]
    others = sorted((n for n in names if n not in main), key=lambda n: (-importances.get(n, 0.0), n))
    return (main + others)[:MAX_GROUPS]


def _section_groups(report: Report, study: optuna.Study, importances: dict[str, float]) -> None:
    report.add("## By choice", "")
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    metric = metric_name(report)
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    names = choice_params(study, importances, _main_choices(report.record, study))
    if not names:
        report.add("_No parameter took more than one value yet._", "")
    for name in names:
        groups: dict[Any, list[FrozenTrial]] = {}
        for trial in finished:
            if name in trial.params:
                groups.setdefault(trial.params[name], []).append(trial)
        rows = []
        for value, trials in sorted(groups.items(), key=lambda item: _order(item[0])):
            values = [v for t in trials if t.state == TrialState.COMPLETE and (v := objective_value(t)) is not None]
            accuracies = [a for a in (TrialFacts.of(t).val_accuracy for t in trials) if a is not None]
            best = (max if maximize else min)(values) if values else None
            rows.append(
                (
                    value,
                    len(trials),
                    sum(t.state == TrialState.PRUNED for t in trials),
                    num(best),
                    num(statistics.median(values)) if values else "-",
                    percent(max(accuracies)) if accuracies else "-",
                )
            )
        report.add(f"### {name}", "")
        report.add(
            *markdown_table((name, "trials", "pruned", f"best {metric}", f"median {metric}", "best val acc"), rows)
        )


def _optuna_figure(
    plot: Callable[[], Any], path: Path, *, size: tuple[float, float] = (7, 4.5)
) -> tuple[Path | None, str]:
    """Render one of Optuna's matplotlib plots; (None, why) when the study cannot support it yet."""
    with matplotlib.rc_context(), warnings.catch_warnings():  # Optuna switches the global style to ggplot
        warnings.simplefilter("ignore")  # its plots are "experimental"
        try:
            axes = plot()
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            plt.close("all")
            return None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        figure = axes.figure if not isinstance(axes, Sequence) else axes[0].figure
        figure.set_size_inches(*size)
        figure.savefig(path, dpi=DPI, bbox_inches="tight")
        plt.close("all")
    return path, ""


def _figures_search(
    report: Report, study: optuna.Study, importances: dict[str, float], unimportant: str, folder: Path
) -> None:
    """Optuna's optimisation history and fANOVA importances."""
    vis = optuna.visualization.matplotlib
    target = metric_target(study)
    path, why = _optuna_figure(lambda: vis.plot_optimization_history(study, target=target), folder / "history.png")
    report.figure(path, "optimisation history", missing=f"optimisation history not available: {why}")
    if importances:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        path, why = _optuna_figure(
            lambda: vis.plot_param_importances(study, evaluator=evaluator, target=target), folder / "importances.png"
        )
        report.figure(path, "parameter importances", missing=f"parameter importances not available: {why}")
    else:
        report.add(f"_parameter importances not available: {unimportant}_", "")


def _section_parallel(report: Report, study: optuna.Study, importances: dict[str, float], folder: Path) -> None:
    vis = optuna.visualization.matplotlib
    report.add("## Parallel coordinates", "")
    important = list(importances)[:PARALLEL_PARAMS]
    path, why = _optuna_figure(
        lambda: vis.plot_parallel_coordinate(study, params=important or None, target=metric_target(study)),
        folder / "parallel.png",
        size=(11, 5),
    )
    report.figure(path, "parallel coordinates", missing=f"not available: {why}")


def _fetch(
    store: FileSystemArtifactStore, study: optuna.Study, trial: FrozenTrial, name: str, folder: Path
) -> Path | None:
    artifact_id = trial_artifacts(study, trial).get(name)
    return fetch_artifact(store, artifact_id, folder / f"best_{name}") if artifact_id else None


def _figures_best(
    report: Report,
    study: optuna.Study,
    best: FrozenTrial,
    test: dict[str, Any] | None,
    store: FileSystemArtifactStore,
    folder: Path,
) -> None:
    """The best trial's learning curves and confusion matrix (test when scored, else validation)."""
    history = TrialFacts.of(best).history
    several = len(history) > 1  # a classifier fitted in one step has one point: no curve to draw
    curves = plot_curves(history, folder / "best_curves.png", title=f"trial {best.number}") if several else None
    report.figure(curves, "learning curves", missing="No learning curves: this model was fitted in one step.")
    if test:
        scores = Classification.from_record(test)
        path = plot_confusion(
            scores.confusion,
            data_record(report).get("classes", []),
            folder / "test_confusion_matrix.png",
            title=f"trial {best.number}: test ({scores.accuracy:.1%})",
        )
        report.figure(path, "test confusion matrix", missing="")
    val_confusion = _fetch(store, study, best, CONFUSION_FILE, folder)
    report.figure(val_confusion, "validation confusion matrix", missing="validation confusion matrix not in the store")


def _section_per_class(report: Report, test: dict[str, Any] | None, val_rows: list[dict[str, str]] | None) -> None:
    report.add("## Per-class precision, recall and F1", "")
    header = ("class", "precision", "recall", "F1", "support")
    if test:
        scores = Classification.from_record(test)
        report.add("Test:", "")
        report.add(
            *markdown_table(
                header,
                [(c.name, num(c.precision, 3), num(c.recall, 3), num(c.f1, 3), c.support) for c in scores.per_class],
            )
        )
    report.add("Validation:", "")
    if val_rows is None:
        report.add("_validation per-class scores not in the store_", "")
    else:
        rows = [
            (
                r["class"],
                num(float(r["precision"]), 3),
                num(float(r["recall"]), 3),
                num(float(r["f1"]), 3),
                r["support"],
            )
            for r in val_rows
        ]
        report.add(*markdown_table(header, rows))


def write_report(
    study: optuna.Study, store: FileSystemArtifactStore, out: Path, *, device: torch.device, vs: Sequence[Compared] = ()
) -> tuple[Path, Path]:
    """Write `out/report.md`, `out/report.html` and `out/figures/`; UserError without a completed trial.

    A study whose test evaluation is missing or stale (interrupted, or a newer best) is evaluated
    first; when that cannot be done the report says why instead of failing. `vs`: studies a last section compares it with.
    """
    best = best_trial(study)
    try:
        test = evaluate_on_test(study, store, device=device, test_part=lambda: stored_test_part(study))
        untested = "the study has no test images"
    except UserError as exc:
        test, untested = None, str(exc).rstrip(".")
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for stale in figures.glob("*.png"):  # a figure not drawn this time must not linger from the last report
        stale.unlink()
    report = Report(record_of(study))
    with tempfile.TemporaryDirectory(prefix="report-") as tmp:
        work = Path(tmp)
        per_class = _fetch(store, study, best, PER_CLASS_FILE, work)
        val_rows = read_per_class(per_class) if per_class else None
        done = completed_trials(study)
        importances, unimportant = param_importances(study)
        section_answer(report, study, best, test, untested)
        section_methods(report, study)
        section_ensemble(report, study)
        report.add("## Figures", "")
        _figures_best(report, study, best, test, store, work)
        _figures_search(report, study, importances, unimportant, work)
        section_costs(report, done, work)
        _section_per_class(report, test, val_rows)
        _section_top(report, study, done)
        _section_groups(report, study, importances)
        _section_parallel(report, study, importances, work)
        section_settings(report)
        for name, path in list(report.figures.items()):
            target = figures / name
            target.write_bytes(path.read_bytes())
            report.figures[name] = target
    report.add(*comparison_lines(Compared(study, store), vs))
    markdown = "\n".join(report.lines).rstrip() + "\n"
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(to_html(markdown, report.figures, f"Study report: {study.study_name}"))
    return out / "report.md", out / "report.html"
