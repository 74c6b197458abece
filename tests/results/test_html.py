"""`to_html`: a Markdown report as one self-contained HTML file with its figures inline."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from PIL import Image

from search.results.html import to_html


def write_png(path: Path, color: tuple[int, int, int]) -> Path:
    Image.new("RGB", (8, 6), color).save(path)
    return path


def inline_sources(html: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def test_a_figure_named_in_figures_is_inlined_as_a_data_uri(tmp_path: Path) -> None:
    history = write_png(tmp_path / "history.png", (200, 10, 10))
    parallel = write_png(tmp_path / "elsewhere.png", (10, 200, 10))  # the key is what the Markdown names
    markdown = "# Report\n\n![history](figures/history.png)\n\n![parallel](figures/parallel.png)\n"
    html = to_html(markdown, {"history.png": history, "parallel.png": parallel}, "Study report: s")
    assert 'src="figures/' not in html
    assert inline_sources(html) == [history.read_bytes(), parallel.read_bytes()], "in the Markdown's order"
    assert 'alt="history"' in html


def test_a_figure_used_twice_is_inlined_twice(tmp_path: Path) -> None:
    curves = write_png(tmp_path / "curves.png", (0, 0, 255))
    html = to_html("![a](figures/curves.png) and ![b](figures/curves.png)\n", {"curves.png": curves}, "t")
    assert inline_sources(html) == [curves.read_bytes()] * 2


def test_an_unknown_figure_is_left_as_a_relative_link(tmp_path: Path) -> None:
    known = write_png(tmp_path / "known.png", (1, 2, 3))
    html = to_html("![gone](figures/missing.png)\n\n![here](figures/known.png)\n", {"known.png": known}, "t")
    assert 'src="figures/missing.png"' in html
    assert inline_sources(html) == [known.read_bytes()]


def test_raw_html_in_the_markdown_is_escaped_not_rendered() -> None:
    markdown = "A note: <script>alert(1)</script>\n\n<div onclick='x()'>block</div>\n"
    html = to_html(markdown, {}, "t")
    assert "<script>" not in html and "<div onclick" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;div onclick='x()'&gt;block&lt;/div&gt;" in html


def test_a_document_with_title_style_and_tables() -> None:
    markdown = "# Study report: digits\n\n| metric | value |\n|---|---|\n| accuracy | 97.50% |\n"
    html = to_html(markdown, {}, "Study report: digits")
    assert html.startswith('<!doctype html>\n<html><head><meta charset="utf-8">')
    assert "<title>Study report: digits</title>" in html
    assert "<style>body{" in html and html.endswith("</body></html>\n")
    assert "<h1>Study report: digits</h1>" in html
    assert "<table>" in html and "<td>accuracy</td>" in html and "<td>97.50%</td>" in html, "tables are enabled"


def test_markup_in_the_title_is_escaped() -> None:
    html = to_html("text\n", {}, "Study report: a</title><script>x()</script>")
    assert "<script>" not in html
