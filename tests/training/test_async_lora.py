"""Asynchronous training of a LoRA policy: the servers start from the base model and every push sends the merged
weights under the base model's names (``pushed_state``), so after a push a real rollout server samples with the
policy's log-probs; and a short LoRA async ``fit`` through the CLI (slow)."""

from __future__ import annotations

import pytest
import torch

from searchr1.models import load_causal_lm, load_tokenizer
from searchr1.models.lora import LoRAConfig
from searchr1.rollout import HFBackend, SamplingParams
from searchr1.rollout.remote import RemoteServers
from searchr1.rollout.server import serve
from searchr1.training.async_rollout import pushed_state


def _trained_lora(model_dir: str):
    """A LoRA policy on ``model_dir`` whose adapters moved away from the base (``B`` redrawn, nonzero)."""
    policy = load_causal_lm(model_dir, lora=LoRAConfig(r=4, alpha=8.0)).eval()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    return policy


@torch.no_grad()
def _teacher_forced(model, prompt: list[int], tokens: list[int]) -> torch.Tensor:
    """log softmax(logits) of ``tokens`` after ``prompt`` (temperature 1), shape (len(tokens),)."""
    logits = model(input_ids=torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1 : -1].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(tokens)[:, None])[:, 0]


@pytest.fixture()
def base_server(tiny_model_dir):
    """Our rollout server (in this process, on threads) started from the base model, and its client."""
    backend = HFBackend(load_causal_lm(tiny_model_dir).eval(), load_tokenizer(tiny_model_dir), batch_size=4)
    http, rollout, url = serve(backend)
    yield RemoteServers([url], timeout=60), backend.tokenizer
    rollout.stop()
    http.shutdown()


def test_a_lora_push_sends_the_merged_weights_under_the_base_names(tiny_model_dir):
    policy = _trained_lora(tiny_model_dir)
    state = pushed_state(policy)
    base = load_causal_lm(tiny_model_dir)
    assert sorted(state) == sorted(base.state_dict())  # what the servers' base model loads, strictly
    assert not any("lora" in name for name in state)
    q = "model.layers.0.self_attn.q_proj.weight"
    lora_q = policy.base_model.model.model.layers[0].self_attn.q_proj
    expected = base.state_dict()[q] + 2.0 * lora_q.lora_B["default"].weight @ lora_q.lora_A["default"].weight
    torch.testing.assert_close(state[q], expected)  # W + (alpha / r) B A
    assert (state[q] - base.state_dict()[q]).abs().max() > 1e-2


def test_after_a_push_the_base_server_samples_with_the_lora_policy(base_server, tiny_model_dir, tmp_path):
    client, tokenizer = base_server
    policy = _trained_lora(tiny_model_dir)
    path = tmp_path / "policy.pt"
    torch.save(pushed_state(policy), path)
    client.push_weights(str(path), 1)
    prompt = tokenizer("Who directed the film Ed Wood?", add_special_tokens=False).input_ids
    out = client.complete(prompt, SamplingParams(max_new_tokens=12, do_sample=False))
    assert out.versions == [1] * len(out.token_ids) and out.token_ids
    expected = _teacher_forced(policy, prompt, out.token_ids)  # the peft model's own forward, adapters on
    torch.testing.assert_close(torch.tensor(out.logprobs), expected, atol=2e-4, rtol=1e-4)
    with policy.disable_adapter():
        base = _teacher_forced(policy, prompt, out.token_ids)
    assert (base - expected).abs().max() > 1e-2  # the adapters matter: the server did not keep the base weights


@pytest.mark.slow
def test_lora_async_fit_through_the_cli(tmp_path):
    """``searchr1 fit -c configs/learn_cpu_async.yaml --model.lora.r=4`` with one server and ``max_staleness: 1``:
    the server starts from the base model, takes merged pushes, and every group trains exactly once."""
    from tests.training.test_async_fit import BATCH, _fit

    steps = 3
    summary = _fit(tmp_path, "learn_cpu_async.yaml", steps, "--model.lora.r=4", "--model.async_rollout.max_staleness=1")
    stats = summary["async"]
    assert stats["max_staleness"] == 1 and 0 <= stats["max_staleness_seen"] <= 1
    assert stats["trained_groups"] == stats["admitted_groups"] == steps * BATCH and stats["dropped_groups"] == 0
    assert stats["weight_push_seconds_mean"] > 0
    log = (tmp_path / "run" / "rollout_server_0.log").read_text()
    assert "Traceback" not in log, log[-2000:]
