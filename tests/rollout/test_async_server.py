"""Rollout server + asynchronous driver on a real tiny model (the server runs in this process, on threads):
the wire protocol gives the in-process backend's tokens, a weight update lands between two tokens of one
completion (two versions, behaviour log-probs of each), admission control bounds staleness and every group is
trained exactly once."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from searchr1.models import load_causal_lm, load_tokenizer
from searchr1.rollout import HFBackend, RolloutConfig, RolloutEngine, SamplingParams
from searchr1.rollout.async_driver import AsyncRolloutDriver, groups_to_batch
from searchr1.rollout.remote import RemoteServers, RolloutServerError
from searchr1.rollout.server import serve
from searchr1.training.forward import response_logprobs


@pytest.fixture()
def server(tiny_model_dir):
    """A served copy of the tiny model: ``(rollout server, client, tokenizer, path)``."""
    backend = HFBackend(load_causal_lm(str(tiny_model_dir)).eval(), load_tokenizer(str(tiny_model_dir)), batch_size=8)
    http, rollout, url = serve(backend)
    yield rollout, RemoteServers([url], timeout=60), backend.tokenizer
    rollout.stop()
    http.shutdown()


def _weights_file(model_dir, path, shift: float) -> str:
    state = {k: v + shift for k, v in load_causal_lm(str(model_dir)).state_dict().items()}
    torch.save(state, path)
    return str(path)


def test_remote_greedy_turn_equals_the_in_process_backend(server, tiny_model, tiny_tokenizer):
    _, client, _ = server
    prompts = [tiny_tokenizer(q, add_special_tokens=False).input_ids for q in ["Who directed Ed Wood?", "x y"]]
    params = SamplingParams(max_new_tokens=12, do_sample=False, stop=["</search>"])
    local = HFBackend(tiny_model, tiny_tokenizer).generate(prompts, params)
    for prompt, want in zip(prompts, local):
        got = client.complete(prompt, params)
        assert got.token_ids == want.token_ids and got.finish_reason == want.finish_reason
        assert got.logprobs == pytest.approx(want.logprobs, abs=1e-4)
        assert got.versions == [0] * len(got.token_ids)


def test_weight_update_lands_between_tokens_and_each_token_keeps_its_behaviour_logprob(
    server, tiny_model_dir, tmp_path, monkeypatch
):
    rollout, client, tokenizer = server
    prompt = tokenizer("Who directed Ed Wood?", add_special_tokens=False).input_ids
    params = SamplingParams(max_new_tokens=200, do_sample=False)
    path = _weights_file(tiny_model_dir, tmp_path / "v1.pt", 0.05)
    boundaries, apply_update = [], rollout._apply_update

    def gated() -> int:  # the push lands at the 4th token boundary (held before, awaited there) on any machine
        boundaries.append(1)
        if len(boundaries) < 4:
            return rollout.version
        deadline = time.monotonic() + 60
        while len(boundaries) == 4 and rollout._update is None and time.monotonic() < deadline:
            time.sleep(0.001)
        return apply_update()

    monkeypatch.setattr(rollout, "_apply_update", gated)
    result = {}
    worker = threading.Thread(target=lambda: result.update(out=client.complete(prompt, params)))
    worker.start()
    deadline = time.monotonic() + 60
    while not rollout._live and time.monotonic() < deadline:  # the request is decoding
        time.sleep(0.001)
    client.push_weights(path, 1)
    worker.join(60)
    out = result["out"]
    assert out.versions[0] == 0 and out.versions[-1] == 1 and sorted(set(out.versions)) == [0, 1]
    assert out.versions == sorted(out.versions)  # one switch, at a token boundary
    switch = out.versions.index(1)
    # behaviour log-probs: the v0 tokens are exactly what the v0 weights give them (teacher forcing) ...
    v0 = load_causal_lm(str(tiny_model_dir)).eval()
    ids = torch.tensor([prompt + out.token_ids])
    ones = torch.ones_like(ids)
    with torch.no_grad():
        forced = response_logprobs(v0, ids, ones, (ones.cumsum(1) - 1), len(prompt), 1.0)[0][0]
    assert forced[:switch].tolist() == pytest.approx(out.logprobs[:switch], abs=1e-4)
    # ... and the v1 tokens were scored by the new weights, not the old ones
    assert (forced[switch:] - torch.tensor(out.logprobs[switch:])).abs().max() > 1e-3


def _driver(server, tiny_model, bm25, max_staleness: int, total: int, batch: int = 3):
    _, client, tokenizer = server
    config = RolloutConfig(
        max_turns=1, max_response_tokens=6, max_obs_tokens=12, max_total_tokens=96, max_prompt_tokens=64, topk=1
    )
    engine = RolloutEngine(HFBackend(tiny_model, tokenizer), bm25, tokenizer, config)

    def prompts(k):
        return [((k, i), f"Question {k} {i}: who directed Ed Wood?") for i in range(batch)]

    return AsyncRolloutDriver(engine, client, prompts, n=2, total_batches=total, max_staleness=max_staleness, seed=1)


@pytest.mark.parametrize("max_staleness", [0, 2])
def test_admission_bounds_staleness_and_trains_every_group_once(
    server, tiny_model, tiny_model_dir, bm25, tmp_path, max_staleness
):
    _, client, _ = server
    total, batch = 5, 3
    driver = _driver(server, tiny_model, bm25, max_staleness, total, batch)
    seen = []
    try:
        for step in range(total):
            groups = driver.take(step)
            # admitted batches never run ahead of the servers' version by more than the bound
            assert driver._next_batch - 1 - client.version <= max_staleness
            assert [g.batch for g in groups] == [step] * batch and all(g.done for g in groups)
            rollout = groups_to_batch(groups, 0)
            sampled = rollout.token_versions[rollout.loss_mask.bool()]
            assert (sampled >= 0).all() and (step - sampled <= max_staleness).all()
            driver.record_trained(groups, step)
            seen += [g.example for g in groups]
            client.push_weights(_weights_file(tiny_model_dir, tmp_path / "w.pt", 0.01 * (step + 1)), step + 1)
            driver.set_version(step + 1)
    finally:
        dropped = driver.close()
    assert sorted(seen) == [(k, i) for k in range(total) for i in range(batch)]  # each group exactly once
    assert dropped == 0 and driver.stats.admitted_groups == driver.stats.trained_groups == total * batch
    assert max(driver.stats.token_staleness) <= max_staleness
    if max_staleness == 0:
        assert set(driver.stats.token_staleness) == {0}


def test_a_dead_server_fails_the_take_with_its_name(server, tiny_model, bm25):
    rollout, client, _ = server
    client.urls = ["http://127.0.0.1:9"]  # nothing listens there (discard port)
    driver = _driver(server, tiny_model, bm25, 1, 2)
    try:
        with pytest.raises(RolloutServerError, match="127.0.0.1:9 stopped answering"):
            driver.take(0)
    finally:
        driver.close()


def test_a_snapshot_resumes_the_groups_in_flight_and_trains_each_once(
    server, tiny_model, tiny_model_dir, bm25, tmp_path
):
    """Step 0 trained, then a checkpoint-time snapshot (batches 1 and 2 finished or in flight, searches pending);
    a new driver restored from it continues them, and batches 0..4 are each trained exactly once."""
    _, client, _ = server
    total, batch = 5, 3
    first = _driver(server, tiny_model, bm25, 2, total, batch)
    try:
        seen = [g.example for g in first.take(0)]
        client.push_weights(_weights_file(tiny_model_dir, tmp_path / "w.pt", 0.01), 1)
        first.set_version(1)
        snapshot = first.snapshot()
    finally:
        first.close()
    assert {g["batch"] for g in snapshot["groups"]} <= {1, 2, 3} and snapshot["groups"]
    saved = {(g["batch"], g["position"]): g["trajectories"] for g in snapshot["groups"]}
    second = _driver(server, tiny_model, bm25, 2, total, batch)
    second.close()  # only its settings are reused: the restored driver is built below
    restored = AsyncRolloutDriver(second.engine, client, second.prompts, n=2, total_batches=total, max_staleness=2,
                                  seed=1, first_batch=1, restore=snapshot)  # fmt: skip
    try:
        for step in range(1, total):
            groups = restored.take(step)
            for g in groups:
                before = saved.get((g.batch, g.position))
                for traj, old in zip(g.trajectories, before or []):
                    # what was sampled before the snapshot is kept, token for token (never re-sampled)
                    assert traj.response_ids[: len(old["response_ids"])] == old["response_ids"]
                    assert traj.versions[: len(old["versions"])] == old["versions"]
            seen += [g.example for g in groups]
            client.push_weights(_weights_file(tiny_model_dir, tmp_path / "w.pt", 0.01 * (step + 1)), step + 1)
            restored.set_version(step + 1)
    finally:
        assert restored.close() == 0
    assert sorted(seen) == [(k, i) for k in range(total) for i in range(batch)]
    assert restored.stats.restored_groups == len(snapshot["groups"])
