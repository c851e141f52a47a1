"""The warm start's guess-fraction calibration (``tools/learn_synthetic.py``): the bisection steps, by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

import learn_synthetic as ls  # noqa: E402


@pytest.mark.parametrize(
    ("g", "too_searchy", "low", "high", "expected"),
    [
        (0.6, True, 0.0, 1.0, 0.75),  # searches too much, no upper bound known yet: one step up
        (0.6, False, 0.0, 1.0, 0.45),  # searches too little, no lower bound: one step down
        (0.75, False, 0.6, 1.0, 0.675),  # 0.6 searched too much, 0.75 too little: halfway
        (0.675, True, 0.6, 0.75, 0.7125),  # between 0.675 and the known upper bound 0.75
        (0.9, True, 0.0, 1.0, 0.95),  # clamped below 1 (a teacher that always guesses never shows a search)
        (0.1, False, 0.0, 1.0, 0.05),  # clamped above 0
    ],
)
def test_next_guess_fraction_bisects(g, too_searchy, low, high, expected) -> None:
    assert ls.next_guess_fraction(g, too_searchy, low, high) == pytest.approx(expected)
