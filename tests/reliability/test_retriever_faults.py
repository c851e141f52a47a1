"""Retriever faults during rollouts against a real server process: killed, slow, 5xx, garbage, restarted.

The server is our production app in its own process behind ``FaultInjector``; the rollout is a real
``RolloutEngine`` whose scripted policy searches every turn and then answers. Every test checks that all B
trajectories come back, that failures are counted in ``search_failures`` (and shown as ``Search failed``), that
the answers are still scored (no silent zero reward), and that it finishes in bounded time (pytest-timeout).
"""

from __future__ import annotations

import threading
import time

import pytest

from searchr1.retrieval import BM25Retriever, HTTPRetriever, RetrievalError
from searchr1.rewards import em_reward
from searchr1.rollout import RolloutConfig, RolloutEngine
from searchr1.rollout.backends.scripted import ScriptedBackend
from searchr1.testing import FaultyServerProcess, HookedBackend, search_then_answer_script

from .conftest import record_figure

pytestmark = pytest.mark.slow  # a real server process, restarted several times (~40 s)

SEARCH_TURNS = 2
PROMPTS = ["Who directed Ed Wood?", "Where is the Eiffel tower?"]
N = 2  # samples per prompt: B = 4 trajectories


@pytest.fixture(scope="module")
def server(index_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("faulty") / "server.log"
    with FaultyServerProcess(index_dir, log_path=log) as proc:
        yield proc


@pytest.fixture
def healthy(server):
    """The server, alive and without faults at the start of the test."""
    if server.pid is None:
        server.start()
    server.set_fault("none")
    return server


def rollout(tokenizer, retriever, hooks=None, on_error="observe"):
    """B = 4 trajectories that search ``SEARCH_TURNS`` times then answer; returns (batch, golden answers)."""
    queries = ["ed wood film director", "ed wood film director", "eiffel tower paris", "eiffel tower paris"]
    answers = ["Tim Burton", "Tim Burton", "Paris", "Paris"]
    backend = HookedBackend(
        ScriptedBackend(search_then_answer_script(queries, answers, SEARCH_TURNS), tokenizer), hooks
    )
    config = RolloutConfig(
        max_turns=SEARCH_TURNS, max_response_tokens=64, max_obs_tokens=128, max_total_tokens=1024,
        max_prompt_tokens=512, topk=2, on_search_error=on_error,
    )  # fmt: skip
    engine = RolloutEngine(backend, retriever, tokenizer, config)
    return engine.generate(PROMPTS, n=N, seed=0), answers


def observations(traj) -> list[str]:
    """The decoded observation blocks of a trajectory, in order."""
    text = traj.response_text
    return [part.split("</information>")[0] for part in text.split("<information>")[1:]]


def check_complete(batch, answers, failures_per_traj: list[int]) -> None:
    """All B trajectories returned, answered and scored; failures counted where expected."""
    assert len(batch.trajectories) == len(PROMPTS) * N
    assert [t.finish_reason for t in batch.trajectories] == ["answer"] * len(batch.trajectories)
    assert [t.num_searches for t in batch.trajectories] == [SEARCH_TURNS] * len(batch.trajectories)
    assert [t.search_failures for t in batch.trajectories] == failures_per_traj
    assert batch.metrics()["search_failures"] == sum(failures_per_traj)
    rewards = [em_reward(t.response_text, [a]) for t, a in zip(batch.trajectories, answers)]
    assert rewards == [1.0] * len(rewards), "a failed search must not zero the reward of a correct answer"
    for traj in batch.trajectories:
        obs = observations(traj)
        assert len(obs) == SEARCH_TURNS
        assert sum("Search failed" in o for o in obs) == traj.search_failures
        assert sum(bool(ids) for ids in traj.doc_ids) == SEARCH_TURNS - traj.search_failures


@pytest.mark.timeout(90)
def test_killed_mid_rollout_gives_counted_failure_observations(healthy, tokenizer):
    client = HTTPRetriever(healthy.url, timeout=2.0, max_retries=1, backoff=0.05)
    start = time.monotonic()
    batch, answers = rollout(tokenizer, client, hooks={1: healthy.kill})  # after turn 0's searches
    elapsed = time.monotonic() - start
    check_complete(batch, answers, failures_per_traj=[1, 1, 1, 1])
    assert "failed after 2 attempts" in observations(batch.trajectories[0])[1]
    record_figure("faults/kill_mid_rollout_seconds", round(elapsed, 2))
    record_figure("faults/survived", 1)


@pytest.mark.timeout(90)
def test_killed_with_raise_policy_stops_with_clear_error(healthy, tokenizer):
    client = HTTPRetriever(healthy.url, timeout=2.0, max_retries=1, backoff=0.05)
    with pytest.raises(RetrievalError, match=rf"{healthy.url}.*failed after 2 attempts.*Is `searchr1-retrieval serve`"):
        rollout(tokenizer, client, hooks={1: healthy.kill}, on_error="raise")
    record_figure("faults/survived", 1)


@pytest.mark.timeout(60)
def test_slow_past_client_timeout_fails_in_bounded_time(healthy, tokenizer):
    healthy.set_fault("slow", delay_s=5.0)
    client = HTTPRetriever(healthy.url, timeout=0.5, max_retries=1, backoff=0.05)
    start = time.monotonic()
    batch, answers = rollout(tokenizer, client)
    elapsed = time.monotonic() - start
    check_complete(batch, answers, failures_per_traj=[SEARCH_TURNS] * 4)
    assert "timed out after 0.5s" in observations(batch.trajectories[0])[0]
    # 2 search turns x 1 attempt x 0.5 s (a timeout is not retried on the same server): far below one 5 s delay
    record_figure("faults/slow_rollout_seconds", round(elapsed, 2))
    record_figure("faults/survived", 1)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "mode,status,message",
    [("status", 500, "HTTP 500"), ("status", 503, "HTTP 503"), ("garbage", 200, "non-JSON reply"),
     ("bad_shape", 200, "unexpected reply")],
    ids=["500", "503", "garbage", "bad_shape"],
)  # fmt: skip
def test_error_replies_are_counted_failures(healthy, tokenizer, mode, status, message):
    healthy.set_fault(mode, status=status)
    client = HTTPRetriever(healthy.url, timeout=2.0, max_retries=2, backoff=0.01)
    batch, answers = rollout(tokenizer, client)
    check_complete(batch, answers, failures_per_traj=[SEARCH_TURNS] * 4)
    assert message in observations(batch.trajectories[0])[0]
    retried = mode == "status"  # 5xx is retried (3 attempts per turn), a malformed 200 is not
    assert healthy.fault_state()["faulted"] == SEARCH_TURNS * (3 if retried else 1)
    record_figure("faults/survived", 1)


@pytest.mark.timeout(60)
def test_transient_5xx_is_retried_without_failures(healthy, tokenizer, corpus_path):
    healthy.set_fault("status", status=503, count=2)  # the next 2 requests fail, then the server recovers
    client = HTTPRetriever(healthy.url, timeout=2.0, max_retries=3, backoff=0.01)
    batch, answers = rollout(tokenizer, client)
    check_complete(batch, answers, failures_per_traj=[0, 0, 0, 0])
    state = healthy.fault_state()
    assert (state["faulted"], state["passed"]) == (2, SEARCH_TURNS)
    local = BM25Retriever(corpus=str(corpus_path))
    expected = [[p.id for p in r] for r in local.search(batch.trajectories[0].queries, 2)]
    assert batch.trajectories[0].doc_ids == expected  # the answers after the retries are the real ones
    record_figure("faults/survived", 1)


@pytest.mark.timeout(120)
def test_restart_mid_rollout_is_bridged_by_retries(healthy, tokenizer):
    """Killed after turn 0 and restarted on the same port while the client retries: no failure at all."""
    restarter: list[threading.Thread] = []

    def kill_and_restart() -> None:
        healthy.kill()
        restarter.append(threading.Thread(target=healthy.start))
        restarter[0].start()

    client = HTTPRetriever(healthy.url, timeout=2.0, max_retries=7, backoff=0.1)  # ~25 s of retries
    start = time.monotonic()
    batch, answers = rollout(tokenizer, client, hooks={1: kill_and_restart})
    restarter[0].join()
    check_complete(batch, answers, failures_per_traj=[0, 0, 0, 0])
    record_figure("faults/restart_bridged_seconds", round(time.monotonic() - start, 2))
    record_figure("faults/survived", 1)


@pytest.mark.timeout(120)
def test_same_client_recovers_after_restart(healthy, tokenizer):
    """Dead server: the rollout degrades; restarted: the same client (stale keep-alive pool) works again."""
    client = HTTPRetriever(healthy.url, timeout=2.0, max_retries=1, backoff=0.05)
    batch, answers = rollout(tokenizer, client)
    check_complete(batch, answers, failures_per_traj=[0, 0, 0, 0])
    healthy.kill()
    batch, answers = rollout(tokenizer, client)
    check_complete(batch, answers, failures_per_traj=[SEARCH_TURNS] * 4)
    healthy.start()
    batch, answers = rollout(tokenizer, client)
    check_complete(batch, answers, failures_per_traj=[0, 0, 0, 0])
    record_figure("faults/survived", 1)
