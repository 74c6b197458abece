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

LATENCY = "latency_ms_b1"


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
        f"{len(front)} are on the Pareto front: no other trial is as accurate and as fast.",
        "",
    )
    report.add(*cost_lines(front))
    path = plot_accuracy_latency(measured, front, folder / "accuracy_latency.png")
    report.figure(path, "validation accuracy against latency, Pareto front marked", missing="")


def timed(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Trials with both figures (trials from before costs were measured have none)."""
    return [t for t in trials if isinstance(t.user_attrs.get(LATENCY), int | float) and "val_accuracy" in t.user_attrs]


def pareto_front(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials no other trial beats on accuracy and latency together, fastest first."""
    front: list[FrozenTrial] = []
    best_accuracy = float("-inf")
    ordered = sorted(trials, key=lambda t: (t.user_attrs[LATENCY], -t.user_attrs["val_accuracy"]))
    for trial in ordered:  # by rising latency, a trial is on the front when it is more accurate than all faster ones
        if trial.user_attrs["val_accuracy"] > best_accuracy:
            front.append(trial)
            best_accuracy = trial.user_attrs["val_accuracy"]
    return front


def plot_accuracy_latency(trials: Sequence[FrozenTrial], front: Sequence[FrozenTrial], path: Path) -> Path:
    figure = new_figure(7, 4.2, layout="constrained")
    axes = figure.subplots()
    axes.scatter(
        [t.user_attrs[LATENCY] for t in trials],
        [t.user_attrs["val_accuracy"] for t in trials],
        s=14,
        alpha=0.5,
        label="trials",
    )
    axes.plot(
        [t.user_attrs[LATENCY] for t in front],
        [t.user_attrs["val_accuracy"] for t in front],
        "-o",
        color="tab:red",
        markersize=5,
        drawstyle="steps-post",
        label="Pareto front",
    )
    for trial in front:
        axes.annotate(
            f"#{trial.number}",
            (trial.user_attrs[LATENCY], trial.user_attrs["val_accuracy"]),
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
    rows = [
        (
            t.number,
            percent(t.user_attrs.get("val_accuracy")),
            f"{t.user_attrs[LATENCY]:.1f}",
            f"{t.user_attrs.get('latency_ms_b64', float('nan')):.2f}",
            f"{t.user_attrs.get('params', 0) / 1e6:.2f} M",
            f"{t.user_attrs.get('size_bytes', 0) / 1e6:.1f} MB",
        )
        for t in front
    ]
    header = ("trial", "val acc", "ms/image (batch 1)", "ms/image (batch 64)", "parameters", "size")
    return markdown_table(header, rows)
