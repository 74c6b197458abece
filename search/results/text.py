"""How results read as text: a trial's choices on one line (console, report), markdown tables (report, comparison)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def format_pairs(pairs: Iterable[tuple[str, Any]]) -> str:
    """`name=value` pairs, floats to two significant digits."""
    return " ".join(f"{k}={v:.2g}" if isinstance(v, float) else f"{k}={v}" for k, v in pairs)


def markdown_cell(value: object) -> str:
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """A markdown table's lines, then a blank one."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(markdown_cell(v) for v in row) + " |" for row in rows]
    return [*lines, ""]


def percent(value: object, missing: str = "-") -> str:
    return f"{value:.2%}" if isinstance(value, (int, float)) else missing
