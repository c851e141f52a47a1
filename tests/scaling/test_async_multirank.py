"""Asynchronous training with 2 trainer ranks (DDP and FSDP2, gloo on CPU) sharing one rollout server process that
``fit`` starts: both ranks finish, train their own prompts, and agree on the weights after every step."""

from __future__ import annotations

import json

import pytest

from .test_multirank import _ok, _weights, _worker

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_two_ranks_with_one_rollout_server_finish_and_agree(tmp_path, tiny_model_dir, strategy):
    _ok(_worker(tiny_model_dir, tmp_path, "--strategy", strategy, "--steps", "3", "--async_staleness", "1"))
    assert (tmp_path / "rollout_server_0.log").exists(), "one server, started by rank 0"
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text())["steps"] for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 3
    for mine, other in zip(*ranks):
        assert not set(mine["ids"]) & set(other["ids"])  # each rank trains its own share of the batch
        assert mine["param_sums"] == other["param_sums"]  # and the ranks agree after every update
    a, b = _weights(tmp_path, 0), _weights(tmp_path, 1)
    assert all((a[k] == b[k]).all() for k in a)
    # the run summary's async object counts the groups of both ranks (not rank 0's share), on every rank alike
    summaries = [json.loads((tmp_path / f"rank{r}.json").read_text())["async"] for r in (0, 1)]
    groups = sum(len(step["ids"]) for steps in ranks for step in steps)
    merged = ("trained_groups", "admitted_groups", "dropped_groups", "staleness_groups", "staleness_tokens")
    for summary in summaries:
        assert summary["trained_groups"] == summary["admitted_groups"] == groups
        assert summary["dropped_groups"] == 0 and sum(summary["staleness_groups"].values()) == groups
        assert summary["max_staleness_seen"] <= summary["max_staleness"] == 1
        assert {k: summary[k] for k in merged} == {k: summaries[0][k] for k in merged}
