"""Two retrieval servers behind one ``HTTPRetriever``: one is killed mid-rollout and no trajectory sees a failed
search; the breaker of the dead one opens and its health shows in the metrics; a slow replica is failed over."""

from __future__ import annotations

import pytest

from searchr1.retrieval import HTTPRetriever
from searchr1.retrieval.launch import ServerProcess
from searchr1.testing import FaultyServerProcess

from .conftest import record_figure
from .test_retriever_faults import SEARCH_TURNS, check_complete, rollout

pytestmark = pytest.mark.slow  # two real server processes


@pytest.mark.timeout(120)
def test_killed_replica_mid_rollout_gives_no_failed_search(index_dir, tokenizer, tmp_path):
    with (
        ServerProcess(index_dir, log_path=tmp_path / "a.log") as a,
        ServerProcess(index_dir, log_path=tmp_path / "b.log") as b,
    ):
        client = HTTPRetriever([a.url, b.url], timeout=2.0, max_retries=3, backoff=0.05, cooldown_s=60.0)
        batch, answers = rollout(tokenizer, client)  # both alive: requests go to both
        check_complete(batch, answers, failures_per_traj=[0, 0, 0, 0])
        before = client.metrics()
        assert before["replica0_requests"] > 0 and before["replica1_requests"] > 0
        assert before["healthy_replicas"] == 2.0

        def kill_a() -> None:
            a.proc.kill()  # SIGKILL: no goodbye to open connections
            a.proc.wait()

        batch, answers = rollout(tokenizer, client, hooks={1: kill_a})  # replica 0 dies after turn 0
        check_complete(batch, answers, failures_per_traj=[0, 0, 0, 0])
        for _ in range(4):  # every search succeeds; the dead replica fails twice (round-robin) and its breaker opens
            assert client.search(["ed wood film director"], 2)[0]
        m = client.metrics()
        assert (m["replica0_failures"], m["replica0_opened"], m["replica1_failures"]) == (2, 1, 0)
        assert m["replica0_up"] == 0.0 and m["replica1_up"] == 1.0 and m["healthy_replicas"] == 1.0
        sent_to_dead = m["replica0_requests"]
        for _ in range(3):  # open breaker: no more requests to the dead replica while it cools down
            assert client.search(["eiffel tower paris"], 2)[0]
        assert client.metrics()["replica0_requests"] == sent_to_dead
        record_figure("replicas/killed_one_of_two_failed_searches", sum(t.search_failures for t in batch.trajectories))


@pytest.mark.timeout(120)
def test_slow_replica_is_failed_over(index_dir, tokenizer, tmp_path):
    with (
        FaultyServerProcess(index_dir, log_path=tmp_path / "slow.log") as slow,
        ServerProcess(index_dir, log_path=tmp_path / "ok.log") as ok,
    ):
        slow.set_fault("slow", delay_s=5.0)
        client = HTTPRetriever([slow.url, ok.url], timeout=0.5, max_retries=2, backoff=0.05, cooldown_s=60.0)
        batch, answers = rollout(tokenizer, client)
        check_complete(batch, answers, failures_per_traj=[0, 0, 0, 0])
        m = client.metrics()
        # the first search of the slow replica timed out twice (threshold 2), then it was left alone
        assert m["replica0_opened"] == 1 and m["replica0_failures"] == 2 and m["replica1_failures"] == 0
        assert m["replica1_requests"] >= SEARCH_TURNS
