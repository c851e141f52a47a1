"""The pieces of ``searchr1.training.shutdown`` that need no second process: which errors are failed collectives,
the one line that names a lost rank, and the store check-in that finds it (a real gloo store, one process)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch.distributed as dist

from searchr1.training.shutdown import is_collective_failure, lost_rank_line, unresponsive_ranks


def test_collective_failures_are_recognised_through_the_cause_chain():
    peer_gone = RuntimeError("[../gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:41235")
    assert is_collective_failure(peer_gone)
    assert is_collective_failure(dist.DistBackendError("anything"))
    try:
        try:
            raise RuntimeError("Timed out waiting 15000ms for recv operation to complete")
        except RuntimeError as inner:
            raise ValueError("wrapped by a library") from inner
    except ValueError as outer:
        assert is_collective_failure(outer)
    assert not is_collective_failure(FloatingPointError("policy loss is nan at rollout step 1"))
    assert not is_collective_failure(KeyError("reward"))
    assert not is_collective_failure(TimeoutError("search failed: timed out after 0.5s"))  # a retriever, not a rank


def test_the_line_names_the_lost_ranks_and_the_traceback_file():
    err = RuntimeError("Connection closed by peer [127.0.0.1]:41235\nmore gloo text")
    report = Path("/runs/x/error-rank0.txt")
    assert lost_rank_line(0, 2, [1], err, report) == (
        "searchr1: rank 1 of 2 did not answer: dead or hung; rank 0's collective failed "
        "(Connection closed by peer [127.0.0.1]:41235); every rank stops. Traceback: /runs/x/error-rank0.txt"
    )
    assert lost_rank_line(2, 8, [3, 5], err, report).startswith("searchr1: ranks 3, 5 of 8 did not answer")
    assert "rank 0 of 4 (it hosts the rendezvous store) is dead or hung" in lost_rank_line(1, 4, None, err, report)


@pytest.fixture
def one_rank_group():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_ranks_that_do_not_check_in_are_the_lost_ones(one_rank_group):
    # this process is rank 0 of a run of 3: it checks in, ranks 1 and 2 never do
    assert unresponsive_ranks(0, 3, wait_s=0.3) == [1, 2]
    assert unresponsive_ranks(0, 1, wait_s=0.3) == []


def test_multi_rank_configs_wait_minutes_not_half_an_hour_for_a_hung_rank():
    from datetime import timedelta

    import yaml

    from searchr1.training.strategies import FSDP2Strategy

    assert FSDP2Strategy()._timeout == timedelta(minutes=10)
    checked = 0
    for path in sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml")):
        strategy = (yaml.safe_load(path.read_text()).get("trainer") or {}).get("strategy")
        if strategy == "fsdp2":  # the class default
            checked += 1
        elif isinstance(strategy, dict) and strategy["class_path"].endswith("FSDP2Strategy"):
            timeout = (strategy.get("init_args") or {}).get("timeout_seconds", 600)
            assert timeout is not None and 60 <= timeout <= 1200, (path.name, timeout)
            checked += 1
    assert checked >= 6  # the five paper configs and tiny_cpu_fsdp2
