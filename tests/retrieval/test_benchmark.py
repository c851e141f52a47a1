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
    split = out["synthetic"]["one_batch_cpu"]  # CPU per batch: in-process, and the server's and client's share
    assert split["inprocess_cpu_ms"] > 0 and split["server_cpu_ms"] > 0 and split["client_cpu_ms"] > 0
    assert out["dense"]["dense_vs_raw_faiss_ratio"] > 0


@pytest.mark.slow
def test_scale_benchmark_prints_one_json_line(tmp_path) -> None:
    args = ["--passages", "3000", "--vocab", "20000", "--queries", "512", "--dense-vectors", "3000"]
    args += ["--workdir", str(tmp_path)]
    out = run_benchmark("retrieval_scale.py", args, timeout=300)
    assert out["passages"] == 3000 and out["build_peak_rss_mb"] > 0 and out["index_bytes"] > out["corpus_bytes"]
    for b in (1, 16, 256, 2560):
        assert out[f"qps_batch_{b}"] > 0 and out[f"p99_ms_batch_{b}"] >= out[f"p50_ms_batch_{b}"]
    for kind in ("hnsw32", "ivfpq"):
        assert 0 < out[f"dense_{kind}_recall_at_10"] <= 1
