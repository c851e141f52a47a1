"""Slow: the reduced learning pipeline on CPU — RL with search raises held-out EM over the SFT start.

``tools/learn_synthetic.py``'s ``quick_check`` (docs/learning.md) on seed 6, a seed no setting was chosen on (the
calibration window and the recipe were set on seeds 0-5): a tiny Qwen2 learns to read on the gold teacher's
trajectories (stage 1; 800 steps here against the full pipeline's 1,200, to keep CI short), a short SFT on a teacher
that guesses on a calibrated share of the questions gives the warm start (stage 2: greedy, it guesses; sampled, it
sometimes searches), then GRPO with BM25 and GRPO with a retriever that returns nothing (the no-search ablation), 20
rollout steps each. Held-out questions are about people never seen in training, so their EM can only come from
reading retrieved passages. The margins are the issue's acceptance (+0.3 over the start and over no-search GRPO).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))


@pytest.mark.slow
@pytest.mark.timeout(2400)  # 442 s on 2 idle cores (docs/learning.md); far longer when the machine is shared
def test_rl_with_search_raises_heldout_em_over_the_sft_start_and_no_search_does_not(tmp_path):
    import learn_synthetic as ls

    em = ls.quick_check(tmp_path, seed=6, read_steps=800)
    start, after, blind = em["sft"], em["grpo"], em["grpo_nosearch"]
    chosen = em["calibration"]["trials"][-1]
    assert em["untrained"]["em"] == 0.0
    assert chosen["greedy"] <= 0.1, em["calibration"]  # calibrated: the greedy start guesses (measured: 0.6 searched)
    assert start["searches"] < 0.5  # the greedy warm start mostly guesses
    assert after["em"] >= start["em"] + 0.3, (start, after)  # RL learned that searching pays ...
    assert after["searches"] >= 1.0 and after["query_is_entity"] >= 0.8  # ... by searching the asked person
    assert after["em"] >= blind["em"] + 0.3, (after, blind)  # and only because the search answers:
    assert after["em"] >= em["best_constant"]["em"] + 0.2  # no policy that cannot read gets near it
