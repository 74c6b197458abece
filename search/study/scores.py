"""Classification figures shared by trial artifacts, the test evaluation and the report."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


@dataclass(frozen=True)
class ClassScores:
    name: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Classification:
    """Accuracy, macro precision/recall/F1, the confusion matrix (rows: true) and per-class scores."""

    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    confusion: list[list[int]]
    per_class: list[ClassScores]

    def to_record(self) -> dict[str, Any]:
        """JSON-ready, for a study or trial user attribute."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Classification:
        return cls(
            accuracy=record["accuracy"],
            macro_precision=record["macro_precision"],
            macro_recall=record["macro_recall"],
            macro_f1=record["macro_f1"],
            confusion=record["confusion"],
            per_class=[ClassScores(**c) for c in record["per_class"]],
        )

    def per_class_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["class", "precision", "recall", "f1", "support"])
        writer.writerows(
            [c.name, f"{c.precision:.4f}", f"{c.recall:.4f}", f"{c.f1:.4f}", c.support] for c in self.per_class
        )
        return buffer.getvalue()


def classify(labels: np.ndarray, probabilities: np.ndarray, class_names: tuple[str, ...]) -> Classification:
    """Score argmax predictions; every class is listed, absent ones with zeros (never a warning)."""
    classes = list(range(len(class_names)))
    predicted = probabilities.argmax(1)
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=classes, zero_division=0)
    return Classification(
        accuracy=float((predicted == labels).mean()) if len(labels) else 0.0,
        macro_precision=float(np.mean(precision)),
        macro_recall=float(np.mean(recall)),
        macro_f1=float(np.mean(f1)),
        confusion=confusion_matrix(labels, predicted, labels=classes).tolist(),
        per_class=[
            ClassScores(name, float(p), float(r), float(f), int(s))
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support, strict=True)
        ],
    )
