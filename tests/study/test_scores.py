"""Classification scores on a hand-made case whose confusion matrix and F1 are known."""

from __future__ import annotations

import csv
import io
import json
import warnings

import numpy as np
import pytest

from search.study.scores import Classification, ClassScores, classify

CLASSES = ("cat", "dog", "fox", "owl")  # "owl" never occurs and is never predicted
LABELS = np.array([0, 0, 0, 1, 1, 2, 2, 2])
PREDICTED = np.array([0, 0, 1, 1, 1, 2, 2, 0])


def probabilities(predicted: np.ndarray, classes: int) -> np.ndarray:
    """Soft probabilities whose argmax is `predicted`."""
    out = np.full((len(predicted), classes), 0.1 / (classes - 1))
    out[np.arange(len(predicted)), predicted] = 0.9
    return out


@pytest.fixture
def scores() -> Classification:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an absent class must not make scikit-learn warn
        return classify(LABELS, probabilities(PREDICTED, len(CLASSES)), CLASSES)


def test_confusion_matrix_rows_are_true_classes(scores: Classification) -> None:
    assert scores.confusion == [[2, 1, 0, 0], [0, 2, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]


def test_accuracy_and_macro_scores_average_every_class(scores: Classification) -> None:
    assert scores.accuracy == pytest.approx(6 / 8)
    # precision: cat 2/3, dog 2/3, fox 2/2, owl 0; recall: cat 2/3, dog 2/2, fox 2/3, owl 0
    assert scores.macro_precision == pytest.approx((2 / 3 + 2 / 3 + 1.0 + 0.0) / 4)
    assert scores.macro_recall == pytest.approx((2 / 3 + 1.0 + 2 / 3 + 0.0) / 4)
    assert scores.macro_f1 == pytest.approx((2 / 3 + 0.8 + 0.8 + 0.0) / 4)


def test_every_class_is_listed_and_an_absent_one_has_zeros(scores: Classification) -> None:
    assert [c.name for c in scores.per_class] == list(CLASSES)
    cat = scores.per_class[0]
    assert (cat.precision, cat.recall, cat.f1, cat.support) == (pytest.approx(2 / 3),) * 3 + (3,)
    assert scores.per_class[1].f1 == pytest.approx(0.8) and scores.per_class[1].support == 2
    assert scores.per_class[3] == ClassScores("owl", 0.0, 0.0, 0.0, 0)
    assert all(isinstance(c.support, int) and isinstance(c.f1, float) for c in scores.per_class)


def test_a_class_predicted_but_never_true_scores_zero_without_a_warning() -> None:
    labels = np.array([0, 0, 1])
    predicted = np.array([0, 2, 1])  # class 2 is predicted once but has no items
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = classify(labels, probabilities(predicted, 3), ("a", "b", "c"))
    assert scores.per_class[2] == ClassScores("c", 0.0, 0.0, 0.0, 0)
    assert scores.confusion == [[1, 0, 1], [0, 1, 0], [0, 0, 0]]


def test_record_round_trips_through_json(scores: Classification) -> None:
    record = json.loads(json.dumps(scores.to_record()))  # as a study user attribute stores it
    assert record["per_class"][3] == {"name": "owl", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    again = Classification.from_record(record)
    assert again == scores
    assert isinstance(again.per_class[0], ClassScores)


def test_per_class_csv_has_a_header_and_one_row_per_class(scores: Classification) -> None:
    text = scores.per_class_csv()
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["class", "precision", "recall", "f1", "support"]
    assert [r[0] for r in rows[1:]] == list(CLASSES)
    assert rows[1] == ["cat", "0.6667", "0.6667", "0.6667", "3"]
    assert rows[4] == ["owl", "0.0000", "0.0000", "0.0000", "0"]
    assert "\r" not in text and text.endswith("\n")
