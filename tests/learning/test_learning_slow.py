"""Slow: the reduced learning pipeline on CPU — task → tiny policy → short SFT → held-out EM with and without search.

Measured on seed 0 (docs/learning.md): the 100-step SFT policy scores held-out EM 0.21 with BM25 and 0.04 with a
retriever that returns nothing, from 0.0 untrained. The assertions use wide margins below those numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))


@pytest.mark.slow
def test_sft_policy_needs_search_on_heldout_entities(tmp_path):
    import learn_synthetic as ls

    prep = ls.prepare(tmp_path, seed=0)
    untrained = ls.evaluate(prep.init_dir, prep, search=True, limit=60)
    sft_dir = ls.run_sft(prep, tmp_path / "sft", steps=100, lr=2e-3, seed=0)
    with_search = ls.evaluate(sft_dir, prep, search=True, limit=60)
    without = ls.evaluate(sft_dir, prep, search=False, limit=60)
    assert untrained["em"] == 0.0
    assert with_search["searches"] >= 1.0  # the SFT policy learned to call the search engine
    assert with_search["em"] >= without["em"] + 0.08, (with_search, without)
