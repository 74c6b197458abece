"""`python -m search report`: one Markdown file (and an HTML twin with images inline) per study.

It holds what users otherwise assemble by hand: the spec, the best configuration with validation
and test figures, the top trials, comparisons by the main choices, Optuna's history, importance
and parallel-coordinate plots, and the best trial's curves, confusion matrices and per-class table.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
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
from search.results.compare import Compared, comparison_lines
from search.results.costs import section_costs
from search.results.html import to_html
from search.results.reading import best_trial
from search.results.text import format_pairs, markdown_table, percent
from search.study.artifacts import CONFUSION_FILE, PER_CLASS_FILE, fetch_artifact, read_per_class
from search.study.evaluation import evaluate_on_test, stored_test_part
from search.study.plots import DPI, plot_confusion, plot_curves
from search.study.record import StudyRecord, completed_trials, record_of, trial_artifacts
from search.study.scores import Classification

MAX_GROUPS = 6  # tables in "By choice"
MAX_GROUP_VALUES = 8  # an integer parameter with more values than this is a knob, not a choice
TOP_TRIALS = 10
PARALLEL_PARAMS = 8  # the most important ones; more lines make the plot unreadable
SPEC_KEYS = (
    "space",
    "data",
    "backbone",
    "pretrained",
    "weights",
    "from_trial",
    "image_size",
    "metric",
    "max_epochs",
    "patience",
    "sampler",
    "pruner",
    "seed",
    "storage",
    "artifact_dir",
)


@dataclass
class Report:
    """Markdown lines and the figures they refer to (file name -> path), built section by section."""

    record: StudyRecord  # read once: every section needs the spec, the data or the kind
    lines: list[str] = field(default_factory=list)
    figures: dict[str, Path] = field(default_factory=dict)

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def figure(self, path: Path | None, caption: str, *, missing: str) -> None:
        if path is None:
            self.add(f"_{missing}_", "")
        else:
            self.figures[path.name] = path
            self.add(f"![{caption}](figures/{path.name})", "")


def _num(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def _section_study(report: Report, study: optuna.Study) -> None:
    spec = report.record.spec
    data = _data(report)
    states = {s: len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState}
    report.add(
        f"# Study report: {study.study_name}",
        "",
        f"Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Trials: "
        + ", ".join(f"{n} {s.name.lower()}" for s, n in states.items() if n)
        + f"; the study {study.direction.name.lower()}s {spec.metric if spec else 'its objective'}.",
        "",
        "## Study",
        "",
    )
    stored = spec.to_record() if spec else {}
    rows = [(key, stored[key]) for key in SPEC_KEYS if stored.get(key) is not None]
    resolved = report.record.resolved
    rows += [(key, value) for key, value in (resolved.to_record() if resolved else {}).items()]
    report.add(*markdown_table(("setting", "value"), rows))
    if data:
        classes = data.get("classes", [])
        shown = ", ".join(classes[:30]) + (f", ... ({len(classes)} in all)" if len(classes) > 30 else "")
        splits = data.get("split_counts", {})
        report.add(
            f"Data: {data.get('name')}, {data.get('images')} images in {len(classes)} classes ({shown}); "
            f"train/val/test {splits.get('train')}/{splits.get('val')}/{splits.get('test')} at {data.get('image_size')} px.",
            "",
        )


def _metric(report: Report) -> str:
    spec = report.record.spec
    return spec.metric if spec else "value"


def _data(report: Report) -> dict[str, Any]:
    data = report.record.data
    return data.to_record() if data else {}


def _macro(rows: list[dict[str, str]] | None, key: str) -> str:
    return _num(statistics.fmean(float(r[key]) for r in rows)) if rows else "-"


def _section_best(
    report: Report,
    study: optuna.Study,
    best: FrozenTrial,
    test: dict[str, Any] | None,
    untested: str,
    val_rows: list[dict[str, str]] | None,
) -> None:
    attrs = best.user_attrs
    metric = _metric(report)
    report.add("## Best configuration", "", f"Trial {best.number}: {metric} = {_num(best.value)}.", "")
    report.add(*markdown_table(("parameter", "value"), sorted(best.params.items())))
    if "config" in attrs:
        report.add("Resolved configuration:", "", "```json", json.dumps(attrs["config"], indent=2), "```", "")
    rows = [
        ("accuracy", percent(attrs.get("val_accuracy")), percent(test["accuracy"]) if test else "-"),
        ("macro precision", _macro(val_rows, "precision"), _num(test["macro_precision"]) if test else "-"),
        ("macro recall", _macro(val_rows, "recall"), _num(test["macro_recall"]) if test else "-"),
        ("macro F1", _num(attrs.get("val_macro_f1")), _num(test["macro_f1"]) if test else "-"),
        ("loss", _num(attrs.get("val_loss")), "-"),
    ]
    data = _data(report)
    val_images = data.get("split_counts", {}).get("val", "?")
    test_header = f"test ({test['images']} images)" if test else "test"
    report.add(*markdown_table(("figure", f"validation ({val_images} images)", test_header), rows))
    if test:
        report.add("The test split was never seen by the search: only this configuration was scored on it, once.", "")
    else:
        report.add(f"_Not evaluated on the test split: {untested}._", "")


def _param_text(trial: FrozenTrial) -> str:
    return format_pairs(sorted(trial.params.items()))


def _section_top(report: Report, study: optuna.Study, done: list[FrozenTrial]) -> None:
    metric = _metric(report)
    report.add("## Top trials", "")
    rows = [
        (
            rank,
            t.number,
            _num(t.value),
            percent(t.user_attrs.get("val_accuracy")),
            _num(t.user_attrs.get("val_macro_f1")),
            t.user_attrs.get("epochs_run", "-"),
            f"{t.user_attrs.get('seconds', 0.0):.1f}",
            _num(round(t.user_attrs["latency_ms_b1"], 1)) if "latency_ms_b1" in t.user_attrs else "-",
            _param_text(t),
        )
        for rank, t in enumerate(done[:TOP_TRIALS], start=1)
    ]
    report.add(
        *markdown_table(
            ("rank", "trial", metric, "val acc", "val macro F1", "epochs", "seconds", "ms/image", "parameters"), rows
        )
    )


def _order(value: object) -> tuple[int, float, str]:
    """Numbers in numeric order, then everything else by its text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def param_importances(study: optuna.Study) -> tuple[dict[str, float], str]:
    """fANOVA importances (seeded, so a report is reproducible), or ({}, why) when the study is too small."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
            return optuna.importance.get_param_importances(study, evaluator=evaluator), ""
    except (ValueError, RuntimeError) as exc:
        return {}, str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _main_choices(record: StudyRecord, study: optuna.Study) -> tuple[str, ...]:
    """The choices users of this study's kind compare first; other low-cardinality parameters follow."""
    try:
        return record.kind().main_choices
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
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    metric = _metric(report)
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
            values = [t.value for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
            accuracies = [t.user_attrs["val_accuracy"] for t in trials if "val_accuracy" in t.user_attrs]
            best = (max if maximize else min)(values) if values else None
            rows.append(
                (
                    value,
                    len(trials),
                    sum(t.state == TrialState.PRUNED for t in trials),
                    _num(best),
                    _num(statistics.median(values)) if values else "-",
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


def _section_search(
    report: Report, study: optuna.Study, importances: dict[str, float], unimportant: str, folder: Path
) -> None:
    vis = optuna.visualization.matplotlib
    report.add("## Search", "", "### Optimisation history", "")
    path, why = _optuna_figure(lambda: vis.plot_optimization_history(study), folder / "history.png")
    report.figure(path, "optimisation history", missing=f"not available: {why}")
    report.add("### Parameter importances", "")
    important = list(importances)[:PARALLEL_PARAMS]
    if importances:
        report.add(*markdown_table(("parameter", "importance"), [(k, f"{v:.3f}") for k, v in importances.items()]))
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        path, why = _optuna_figure(
            lambda: vis.plot_param_importances(study, evaluator=evaluator), folder / "importances.png"
        )
        report.figure(path, "parameter importances", missing=f"not available: {why}")
    else:
        report.add(f"_not available: {unimportant}_", "")
    report.add("### Parallel coordinates", "")
    path, why = _optuna_figure(
        lambda: vis.plot_parallel_coordinate(study, params=important or None), folder / "parallel.png", size=(11, 5)
    )
    report.figure(path, "parallel coordinates", missing=f"not available: {why}")


def _fetch(
    store: FileSystemArtifactStore, study: optuna.Study, trial: FrozenTrial, name: str, folder: Path
) -> Path | None:
    artifact_id = trial_artifacts(study, trial).get(name)
    return fetch_artifact(store, artifact_id, folder / f"best_{name}") if artifact_id else None


def _section_best_trial(
    report: Report,
    study: optuna.Study,
    best: FrozenTrial,
    test: dict[str, Any] | None,
    val_rows: list[dict[str, str]] | None,
    store: FileSystemArtifactStore,
    folder: Path,
) -> None:
    report.add(f"## Best trial ({best.number})", "", "### Learning curves", "")
    history = best.user_attrs.get("history", [])
    curves = plot_curves(history, folder / "best_curves.png", title=f"trial {best.number}") if history else None
    report.figure(curves, "learning curves", missing="no epochs: this classifier is fitted in one step")
    class_names = _data(report).get("classes", [])
    report.add("### Confusion matrices", "")
    val_confusion = _fetch(store, study, best, CONFUSION_FILE, folder)
    report.figure(val_confusion, "validation confusion matrix", missing="validation confusion matrix not in the store")
    if test:
        scores = Classification.from_record(test)
        path = plot_confusion(
            scores.confusion,
            class_names,
            folder / "test_confusion_matrix.png",
            title=f"trial {best.number}: test ({scores.accuracy:.1%})",
        )
        report.figure(path, "test confusion matrix", missing="")
        report.add("### Per-class scores (test)", "")
        report.add(
            *markdown_table(
                ("class", "precision", "recall", "F1", "support"),
                [(c.name, _num(c.precision), _num(c.recall), _num(c.f1), c.support) for c in scores.per_class],
            )
        )
    report.add("### Per-class scores (validation)", "")
    if val_rows is None:
        report.add("_validation per-class scores not in the store_", "")
    else:
        rows = [(r["class"], r["precision"], r["recall"], r["f1"], r["support"]) for r in val_rows]
        report.add(*markdown_table(("class", "precision", "recall", "F1", "support"), rows))


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
        _section_study(report, study)
        per_class = _fetch(store, study, best, PER_CLASS_FILE, work)
        val_rows = read_per_class(per_class) if per_class else None
        _section_best(report, study, best, test, untested, val_rows)
        _section_top(report, study, completed_trials(study))
        section_costs(report, completed_trials(study), work)
        importances, unimportant = param_importances(study)
        _section_groups(report, study, importances)
        _section_search(report, study, importances, unimportant, work)
        _section_best_trial(report, study, best, test, val_rows, store, work)
        for name, path in list(report.figures.items()):
            target = figures / name
            target.write_bytes(path.read_bytes())
            report.figures[name] = target
    report.add(*comparison_lines(Compared(study, store), vs))
    markdown = "\n".join(report.lines).rstrip() + "\n"
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(to_html(markdown, report.figures, f"Study report: {study.study_name}"))
    return out / "report.md", out / "report.html"
