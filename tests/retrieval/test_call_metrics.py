"""Per-call retrieval metrics: nearest-rank percentiles, the call window, the client recorder and the server's
Prometheus ``/metrics``."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from searchr1.retrieval import BM25Retriever, RetrievalError, create_app
from searchr1.retrieval.call_metrics import CallWindow, cache_hit_rate, percentile
from searchr1.retrieval.search_log import SearchRecorder


def test_percentile_nearest_rank_by_hand() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    # sorted 1..5: p50 -> rank ceil(2.5) = 3 -> 3.0; p99 -> rank ceil(4.95) = 5 -> 5.0; p20 -> rank 1 -> 1.0
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 20)) == (3.0, 5.0, 1.0)
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError, match=r"\(0, 100\]"):
        percentile(values, 0)


def test_call_window_counts_rate_and_keeps_the_last_calls() -> None:
    now = [10.0]
    window = CallWindow(size=3, clock=lambda: now[0])
    for seconds, queries, failed in [(0.5, 4, False), (1.0, 2, True), (0.25, 6, False), (2.0, 8, False)]:
        now[0] += 1.0
        window.add(seconds, queries, failed)
    s = window.stats()
    # counts over all 4 calls; percentiles and rate over the last 3 (1.0, 0.25, 2.0):
    # p50 = 1.0, p99 = 2.0; they started at 12 - 1.0 = 11.0 and it is now 14.0: (2 + 6 + 8) / 3.0 s
    assert (s.calls, s.queries, s.failures) == (4, 20, 1)
    assert (s.latency_p50, s.latency_p99) == (1.0, 2.0)
    assert s.qps == pytest.approx(16 / 3.0)
    assert cache_hit_rate({"queries": 8.0, "cache_hits": 2.0}) == 0.25 and math.isnan(cache_hit_rate({}))


def test_recorder_metrics_include_failures_and_the_dedup_hit_rate(hotpot_index: Path) -> None:
    recorder = SearchRecorder(BM25Retriever(index_dir=str(hotpot_index)))
    recorder.search(["Ed Wood", "Ed Wood", "Shirley Temple", "Ed Wood"], 2)  # 4 queries, 2 distinct

    class Down:
        def search(self, queries, topk):
            raise RetrievalError("down")

    m = recorder.metrics()
    assert (m["calls"], m["queries"], m["failures"], m["cache_hit_rate"]) == (1.0, 4.0, 0.0, 0.5)
    assert m["latency_p50_ms"] == m["latency_p99_ms"] > 0
    failing = SearchRecorder(Down())
    with pytest.raises(RetrievalError):
        failing.search(["x"], 1)
    assert failing.metrics()["failures"] == 1.0 and math.isnan(failing.metrics()["cache_hit_rate"])


def test_server_metrics_in_prometheus_text_format(hotpot_index: Path) -> None:
    with TestClient(create_app(BM25Retriever(index_dir=str(hotpot_index)))) as c:
        assert c.post("/retrieve", json={"queries": ["Ed Wood", "Ed Wood", "Shirley Temple"], "topk": 2}).is_success
        assert c.post("/retrieve", json={"queries": ["Kiss and Tell"]}).is_success
        assert c.post("/retrieve", json={"queries": "not a list"}).status_code == 422
        resp = c.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }
    assert samples[("searchr1_retrieve_requests_total", (("status", "200"),))] == 2
    assert samples[("searchr1_retrieve_requests_total", (("status", "422"),))] == 1
    assert samples[("searchr1_retrieve_request_seconds_count", ())] == 3
    assert (
        samples[("searchr1_retrieve_queries_total", ())] == 4 and samples[("searchr1_retrieve_failures_total", ())] == 0
    )
    # the server searches each request's distinct queries: "Ed Wood" twice in one request -> 1 of 4 from dedup
    assert samples[("searchr1_retriever_cache_hit_ratio", ())] == 0.25
    assert (
        0
        < samples[("searchr1_retrieve_latency_p50_seconds", ())]
        <= samples[("searchr1_retrieve_latency_p99_seconds", ())]
    )
    assert samples[("searchr1_retrieve_qps", ())] > 0
