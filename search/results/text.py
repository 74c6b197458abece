"""How a trial's choices read on one line: shared by the console and the report."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def format_pairs(pairs: Iterable[tuple[str, Any]]) -> str:
    """`name=value` pairs, floats to two significant digits."""
    return " ".join(f"{k}={v:.2g}" if isinstance(v, float) else f"{k}={v}" for k, v in pairs)
