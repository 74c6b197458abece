"""What the report's sections share: the Markdown being built, its figures, and numbers for people."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search.study.record import StudyRecord


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


def num(value: object, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"


def metric_name(report: Report) -> str:
    spec = report.record.spec
    return spec.metric if spec else "value"


def data_record(report: Report) -> dict[str, Any]:
    data = report.record.data
    return data.to_record() if data else {}
