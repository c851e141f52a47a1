"""Circuit breaker and replica choice without servers: state changes by hand, round-robin, failover order."""

from __future__ import annotations

import socket

import pytest

from searchr1.retrieval import HTTPRetriever, RetrievalError
from searchr1.retrieval.replicas import CircuitBreaker, ReplicaSet


def test_breaker_opens_after_threshold_and_half_opens_after_cooldown() -> None:
    br = CircuitBreaker(failure_threshold=2, cooldown_s=5.0)
    br.failure(now=100.0)
    assert br.state(100.0) == "closed"  # 1 failure < 2
    br.failure(now=101.0)
    assert (br.state(101.0), br.opened) == ("open", 1)
    assert br.state(105.9) == "open" and br.state(106.0) == "half_open"  # 101 + 5
    br.failure(now=106.5)  # the trial failed: open again from 106.5
    assert (br.state(110.0), br.state(111.5), br.opened) == ("open", "half_open", 2)
    br.success()
    assert (br.state(111.5), br.failures_in_row) == ("closed", 0)


def _dead_url() -> str:
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_round_robin_skips_open_replicas_and_error_names_each() -> None:
    a, b = _dead_url(), _dead_url()
    replicas = ReplicaSet([a, b], timeout=1.0, max_connections=2, failure_threshold=1, cooldown_s=60.0)
    assert [replicas._pick(set()) for _ in range(4)] == [0, 1, 0, 1]
    with pytest.raises(RetrievalError, match=r"replicas .*failed after 3 attempts: .*cannot reach.*; .*cannot reach"):
        replicas.request("POST", "/retrieve", b"{}", {}, max_retries=2, backoff=0.0)
    m = replicas.metrics()
    assert (m["replica0_up"], m["replica1_up"], m["healthy_replicas"]) == (0.0, 0.0, 0.0)
    assert m["replica0_failures"] + m["replica1_failures"] == 3


def test_single_url_keeps_the_old_message() -> None:
    url = _dead_url()
    client = HTTPRetriever(url, timeout=1.0, max_retries=1, backoff=0.0)
    with pytest.raises(RetrievalError, match=rf"retrieval server {url} failed after 2 attempts: cannot reach"):
        client.search(["x"], 1)
    assert client.metrics()["replica0_failures"] == 2.0 and client.urls == [url]
