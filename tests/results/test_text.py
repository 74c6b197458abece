"""`format_pairs`: how a trial's choices read on one line of the console and the report."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from search.results.text import format_pairs


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0.0012345, "0.0012"),
        (0.5, "0.5"),
        (123.456, "1.2e+02"),
        (1.0, "1"),
        (np.float64(0.0366), "0.037"),  # what scikit-learn and numpy hand back is still a float
    ],
)
def test_floats_are_shown_to_two_significant_digits(value: float, shown: str) -> None:
    assert format_pairs([("lr", value)]) == f"lr={shown}"


@pytest.mark.parametrize(
    ("value", "shown"),
    [(3, "3"), (123456, "123456"), ("adamw", "adamw"), (True, "True"), (None, "None"), ("0.123456", "0.123456")],
)
def test_ints_strings_and_others_are_left_as_they_are(value: Any, shown: str) -> None:
    assert format_pairs([("x", value)]) == f"x={shown}"


def test_pairs_keep_their_order_separated_by_one_space() -> None:
    pairs = [("unfreeze_blocks", 2), ("lr", 0.000316227), ("optimizer", "adamw"), ("head_dropout", 0.25)]
    assert format_pairs(pairs) == "unfreeze_blocks=2 lr=0.00032 optimizer=adamw head_dropout=0.25"
    assert format_pairs(iter(pairs[:1])) == "unfreeze_blocks=2", "any iterable of pairs"
    assert format_pairs([]) == ""
