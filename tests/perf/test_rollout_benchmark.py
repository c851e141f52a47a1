"""The rollout benchmark script runs end to end on a small workload and reports a multi-turn rollout."""

from __future__ import annotations

import pytest

from tests.benchutil import run_benchmark


@pytest.mark.slow
def test_rollout_benchmark_prints_its_figures(tmp_path) -> None:
    args = ["--batch", "6", "--sft-steps", "30", "--repeats", "1", "--latency-ms", "50"]
    args += ["--policy-cache", str(tmp_path / "policy")]
    out = run_benchmark("rollout.py", args, timeout=300)
    assert out["benchmark"] == "rollout" and out["batch"] == 6
    assert out["turns_mean"] >= 1 and out["sampled_tokens"] > 0
    lo, hi = out["sampled_per_row_min_max"]
    assert 1 <= lo <= hi <= 48 * 3  # at most max_response_tokens per turn over max_turns + 1 turns
    assert out["latency_ms"] == [50.0] and out["latency_runs_same_tokens"]  # latency never changes the tokens
    for key in ("slow_retriever_ratio", "sync_slow_retriever_ratio"):
        assert out[key] > 0
    for key in ("ratio", "ratio_vs_uniform", "engine_tokens_per_s", "matched_generate_tokens_per_s"):
        assert out[key] > 0
    again = run_benchmark("rollout.py", args, timeout=300)  # reuses the saved policy: same workload
    assert again["sampled_tokens"] == out["sampled_tokens"] and again["sft_warmup_s"] < out["sft_warmup_s"]
