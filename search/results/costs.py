"""The report's cost section: what each trial's model costs to run against what it scores, Pareto front marked.

A trial is on the front when no other trial is at least as accurate and at least as fast, and
strictly better at one of them: those are the only models worth choosing between on these two
figures. Latency is per image at batch 1 (search.study.costs), the figure a deployed service feels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from optuna.trial import FrozenTrial

from search.results.text import markdown_table, percent
from search.study.plots import new_figure
from search.study.trial_facts import TrialFacts


class Sections(Protocol):
    """What a section writes into (search.results.report.Report)."""

    def add(self, *lines: str) -> None: ...

    def figure(self, path: Path | None, caption: str, *, missing: str) -> None: ...


def section_costs(report: Sections, trials: Sequence[FrozenTrial], folder: Path) -> None:
    """Accuracy against latency for every timed trial; the Pareto front as a table and a plot."""
    measured = timed(trials)
    report.add("## Cost to run", "")
    if not measured:
        report.add("_No trial was timed: the study was run by a version that did not measure costs._", "")
        return
    front = pareto_front(measured)
    report.add(
        f"{len(measured)} complete trials were timed on the study's device (median of repeated runs). "
        f"{len(front)} {'is' if len(front) == 1 else 'are'} on the Pareto front: no other trial is as accurate and as fast.",
        "",
    )
    report.add(*cost_lines(front))
    path = plot_accuracy_latency(measured, front, folder / "accuracy_latency.png")
    report.figure(path, "validation accuracy against latency, Pareto front marked", missing="")


def timed(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Trials with both figures (trials from before costs were measured have none)."""
    return [t for t in trials if TrialFacts.of(t).timed]


def _latency(trial: FrozenTrial) -> float:
    return float(TrialFacts.of(trial).latency_ms_b1 or 0.0)  # timed trials only: see `timed`


def _accuracy(trial: FrozenTrial) -> float:
    return float(TrialFacts.of(trial).val_accuracy or 0.0)


def pareto_front(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials no other trial beats on accuracy and latency together, fastest first."""
    front: list[FrozenTrial] = []
    best_accuracy = float("-inf")
    ordered = sorted(trials, key=lambda t: (_latency(t), -_accuracy(t)))
    for trial in ordered:  # by rising latency, a trial is on the front when it is more accurate than all faster ones
        if _accuracy(trial) > best_accuracy:
            front.append(trial)
            best_accuracy = _accuracy(trial)
    return front


def plot_accuracy_latency(trials: Sequence[FrozenTrial], front: Sequence[FrozenTrial], path: Path) -> Path:
    figure = new_figure(7, 4.2, layout="constrained")
    axes = figure.subplots()
    axes.scatter(
        [_latency(t) for t in trials],
        [_accuracy(t) for t in trials],
        s=14,
        alpha=0.5,
        label="trials",
    )
    axes.plot(
        [_latency(t) for t in front],
        [_accuracy(t) for t in front],
        "-o",
        color="tab:red",
        markersize=5,
        drawstyle="steps-post",
        label="Pareto front",
    )
    for trial in front:
        axes.annotate(
            f"#{trial.number}",
            (_latency(trial), _accuracy(trial)),
            textcoords="offset points",
            xytext=(4, -10),
            fontsize=7,
        )
    axes.set_xscale("log")
    axes.set_xlabel("latency, ms per image at batch 1 (log scale)")
    axes.set_ylabel("validation accuracy")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.savefig(path)
    return path


def cost_lines(front: Sequence[FrozenTrial]) -> list[str]:
    """The front as a table: what each choice costs and scores."""
    rows = []
    for trial in front:
        facts = TrialFacts.of(trial)
        rows.append(
            (
                trial.number,
                percent(facts.val_accuracy),
                f"{_latency(trial):.1f}",
                f"{facts.latency_ms_b64:.2f}" if facts.latency_ms_b64 is not None else "-",
                f"{(facts.params or 0) / 1e6:.2f} M",
                f"{(facts.size_bytes or 0) / 1e6:.1f} MB",
            )
        )
    header = ("trial", "val acc", "ms/image (batch 1)", "ms/image (batch 64)", "parameters", "size")
    return markdown_table(header, rows)
