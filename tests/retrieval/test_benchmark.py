"""The retrieval benchmark script runs end to end and prints one JSON line (no timing asserts)."""

from __future__ import annotations

import pytest

from tests.benchutil import run_benchmark


@pytest.mark.slow
def test_benchmark_prints_one_json_line() -> None:
    args = ["--passages", "2000", "--dense-passages", "200", "--repeats", "1", "--pair-repeats", "5"]
    args += ["--loop-queries", "16"]
    out = run_benchmark("retrieval.py", args, timeout=300)
    for section in ("synthetic", "hotpotqa"):
        keys = ("server_vs_inprocess_ratio", "server_vs_inprocess_paired", "concurrent_vs_inprocess_ratio")
        for key in (*keys, "concurrent_vs_inprocess_paired", "concurrent_unbatched_ratio", "dedup_speedup"):
            assert out[section][key] > 0
    assert out["hotpotqa"]["bm25_recall_at_5"] >= 0.65
    assert out["dense"]["dense_vs_raw_faiss_ratio"] > 0
