"""Small PNG figures: learning curves and confusion matrices.

Built on matplotlib's object API (`Figure`, no pyplot), so no global state, no display and no
backend choice are involved; safe in worker processes and threads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

DPI = 100  # small files: the dashboard and the report show them at about this size anyway
ANNOTATE_UP_TO = 15  # classes; beyond this, counts in the cells are unreadable and colour says enough


def plot_curves(history: Sequence[Mapping[str, float]], path: Path, *, title: str = "") -> Path:
    """Train and validation loss and accuracy per epoch, side by side."""
    epochs = [int(h["epoch"]) for h in history]
    figure = Figure(figsize=(8, 3.4), dpi=DPI, layout="constrained")
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    for axes, what in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        for split, style in (("train", "-o"), ("val", "-s")):
            axes.plot(epochs, [h[f"{split}_{what}"] for h in history], style, markersize=3, label=split)
        axes.set_xlabel("epoch")
        axes.set_ylabel(what)
        axes.grid(alpha=0.3)
        axes.legend()
        if len(epochs) < 12:
            axes.set_xticks(epochs)
    if title:
        figure.suptitle(title)
    figure.savefig(path)
    return path


def plot_confusion(matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: Path, *, title: str) -> Path:
    """Counts with true classes as rows; the size grows with the number of classes."""
    counts = np.asarray(matrix)
    n = len(class_names)
    side = min(12.0, max(4.0, 0.35 * n + 2.5))
    figure = Figure(figsize=(side, side * 0.85), dpi=DPI, layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=axes, shrink=0.8)
    axes.set_xticks(
        range(n), labels=class_names, rotation=90 if sum(len(c) for c in class_names) > 40 else 0, fontsize=8
    )
    axes.set_yticks(range(n), labels=class_names, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    if n <= ANNOTATE_UP_TO:
        threshold = counts.max() / 2 if counts.size else 0
        for (row, col), count in np.ndenumerate(counts):
            color = "white" if count > threshold else "black"
            axes.text(col, row, str(count), ha="center", va="center", fontsize=8, color=color)
    figure.savefig(path)
    return path
