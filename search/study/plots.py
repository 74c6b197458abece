"""Small PNG figures: learning curves and confusion matrices.

Built on matplotlib's object API (`Figure`, no pyplot), so no global state, no display and no
backend choice are involved; safe in worker processes and threads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100  # small files: the dashboard and the report show them at about this size anyway
ANNOTATE_UP_TO = 15  # classes; beyond this, counts in the cells are unreadable and colour says enough
LABEL_CHAR_INCHES = 0.065  # the width of one character of a tick label at font size 8


def new_figure(width: float, height: float, *, layout: Literal["constrained"] | None = None) -> Figure:
    """A figure on matplotlib's object API, importing matplotlib here: at every command's start it cost ~1 s."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout=layout)


def plot_curves(history: Sequence[Mapping[str, float]], path: Path, *, title: str = "") -> Path:
    """Train and validation loss and accuracy per epoch, side by side."""
    epochs = [int(h["epoch"]) for h in history]
    figure = new_figure(8, 3.4)
    figure.subplots_adjust(left=0.08, right=0.98, bottom=0.15, top=0.86 if title else 0.95, wspace=0.25)
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
    """Counts with true classes as rows; the size grows with the number of classes.

    Counts are written in the cells up to ANNOTATE_UP_TO classes, and a colour bar is drawn only
    beyond that. Margins are set from the labels' length: matplotlib's automatic layouts doubled the
    drawing time (0.25 s to 0.5 s for 10 classes), as much as fitting a features trial.
    """
    counts = np.asarray(matrix)
    n = len(class_names)
    side = min(12.0, max(4.0, 0.35 * n + 2.5))
    width, height = side, side * 0.85
    rotate = sum(len(c) for c in class_names) > 40
    label_inches = LABEL_CHAR_INCHES * max((len(c) for c in class_names), default=1)
    annotate = n <= ANNOTATE_UP_TO
    figure = new_figure(width, height)
    figure.subplots_adjust(
        left=min(0.45, (0.5 + label_inches) / width),
        bottom=min(0.45, (0.45 + (label_inches if rotate else 0.15)) / height),
        right=1 - (0.15 if annotate else 0.9) / width,
        top=1 - 0.4 / height,
    )
    axes = figure.subplots()
    image = axes.imshow(counts, cmap="Blues")
    if not annotate:
        figure.colorbar(image, ax=axes, shrink=0.8)
    axes.set_xticks(range(n), labels=class_names, rotation=90 if rotate else 0, fontsize=8)
    axes.set_yticks(range(n), labels=class_names, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    if annotate:
        threshold = counts.max() / 2 if counts.size else 0
        for (row, col), count in np.ndenumerate(counts):
            color = "white" if count > threshold else "black"
            axes.text(col, row, str(count), ha="center", va="center", fontsize=8, color=color)
    figure.savefig(path)
    return path
