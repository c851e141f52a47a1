"""Slow: the reduced learning pipeline on CPU — task → tiny policy → short SFT → greedy held-out evaluation.

What this checks is what was measured (docs/learning.md): the short SFT start learns the Search-R1 *format* (it
searches and answers on every held-out question, from EM 0.0 untrained). It does not check that the policy reads
the retrieved passages or that RL improves it: on seed 0 the 100-step SFT policy gives one answer per question type
whatever the entity (``distinct_answers``), so its held-out EM is the share of entities that answer happens to fit.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))


@pytest.mark.slow
def test_short_sft_learns_the_search_format_on_heldout_questions(tmp_path):
    import learn_synthetic as ls

    prep = ls.prepare(tmp_path, seed=0)
    untrained = ls.evaluate(prep.init_dir, prep, search=True, limit=60)
    sft_dir = ls.run_sft(prep, tmp_path / "sft", steps=100, lr=2e-3, seed=0)
    after = ls.evaluate(sft_dir, prep, search=True, limit=60)
    assert untrained["em"] == 0.0
    assert after["searches"] >= 1.0  # every held-out question gets at least one <search> ... </search> call
    assert after["answered"] >= 0.9  # and ends with an <answer> ... </answer>
