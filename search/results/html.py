"""A Markdown report as one self-contained HTML file, figures inline, to mail or open anywhere."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from markdown_it import MarkdownIt

HTML_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:14px}
th{background:#f3f3f3}img{max-width:100%}pre{background:#f6f6f6;padding:.6em;overflow:auto}"""


def to_html(markdown: str, figures: dict[str, Path], title: str) -> str:
    """The Markdown as one HTML file with every figure inline, to mail or open anywhere."""
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)

    def inline(match: re.Match[str]) -> str:
        path = figures.get(match.group(1))
        if path is None:
            return match.group(0)
        return f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}"'

    body = re.sub(r'src="figures/([^"]+)"', inline, body)
    return (
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{HTML_STYLE}</style></head><body>\n{body}</body></html>\n"
    )
