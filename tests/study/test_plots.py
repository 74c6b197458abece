"""Learning curves and confusion matrices as PNG files (and SVG, whose text can be read back)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from search.study.plots import ANNOTATE_UP_TO, plot_confusion, plot_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HISTORY = [
    {"epoch": e, "train_loss": 2.0 / e, "val_loss": 2.2 / e, "train_accuracy": 0.3 * e, "val_accuracy": 0.25 * e}
    for e in (1, 2, 3)
]


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG file, after checking its signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > len(PNG_SIGNATURE)
    with Image.open(path) as image:
        image.load()
        return image.size


def svg_texts(path: Path) -> list[str]:
    """The text drawn in an SVG written by matplotlib (one comment per text element)."""
    return re.findall(r"<!-- (.*?) -->", path.read_text())


def test_curves_are_a_png_of_the_figure_size(tmp_path: Path) -> None:
    path = plot_curves(HISTORY, tmp_path / "curves.png", title="trial 3")
    assert path == tmp_path / "curves.png"
    assert path.stat().st_size > 0
    assert png_size(path) == (800, 340)  # 8 x 3.4 inches at 100 dpi


def test_curves_show_both_panels_and_the_title(tmp_path: Path) -> None:
    texts = svg_texts(plot_curves(HISTORY, tmp_path / "curves.svg", title="trial 3"))
    assert {"loss", "accuracy", "epoch", "train", "val", "trial 3"} <= set(texts)


def test_confusion_is_a_png_with_every_count_written_in_its_cell(tmp_path: Path) -> None:
    matrix = [[17, 2, 0], [1, 23, 3], [0, 4, 31]]
    path = plot_confusion(matrix, ["a", "b", "c"], tmp_path / "confusion.png", title="val")
    assert path.stat().st_size > 0
    assert png_size(path) == (400, 340)  # the smallest size: 4 inches wide
    texts = svg_texts(plot_confusion(matrix, ["a", "b", "c"], tmp_path / "confusion.svg", title="val"))
    assert {"17", "23", "31", "predicted", "true", "val"} <= set(texts)
    assert texts.count("0") >= 2  # the two empty cells (and maybe a colour bar tick)


def test_confusion_of_many_classes_is_larger_and_leaves_cells_blank(tmp_path: Path) -> None:
    n = 30
    assert n > ANNOTATE_UP_TO
    matrix = (np.eye(n, dtype=int) * 37).tolist()  # 37: never a colour bar tick (0, 5, 10, ... 35)
    names = [f"class_{i:02d}" for i in range(n)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = plot_confusion(matrix, names, tmp_path / "confusion.png", title="val")
        svg = plot_confusion(matrix, names, tmp_path / "confusion.svg", title="val")
    assert png_size(path) == (1200, 1020)  # capped at 12 inches
    texts = svg_texts(svg)
    assert set(names) <= set(texts), "every class is still labelled on both axes"
    assert "37" not in texts, "counts are not written into the cells"
    assert len(texts) < 2 * n + 20


def test_confusion_of_an_empty_matrix_does_not_crash(tmp_path: Path) -> None:
    path = plot_confusion([[0, 0], [0, 0]], ["a", "b"], tmp_path / "confusion.png", title="nothing yet")
    assert png_size(path) == (400, 340)
