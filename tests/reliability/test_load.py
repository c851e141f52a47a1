"""The load benchmark, CI-sized: many concurrent clients with big batches, zero errors, flat server memory."""

from __future__ import annotations

import pytest

from tests.benchutil import run_benchmark

from .conftest import record_figure


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_load_benchmark_holds_with_zero_errors_and_flat_memory() -> None:
    args = ["--clients", "32", "--batch", "256", "--requests-per-client", "2", "--time-limit", "120"]
    out = run_benchmark("load.py", args, timeout=220)
    assert out["requests"] == out["requests_planned"] == 64
    assert out["errors"] == 0, out["error_kinds"]
    assert out["server_alive_after"]
    assert 0 < out["p50_ms"] <= out["p99_ms"] <= out["max_ms"]
    # flat: growth after the warm-up wave is small next to what 64 x 256 queries of answers would leak
    assert out["rss_growth_mb"] < 0.25 * out["server_rss_after_warmup_mb"], out
    for key in ("queries_per_s", "p50_ms", "p99_ms", "errors", "rss_growth_mb"):
        record_figure(f"load_ci/{key}", out[key])
