"""The training step's fast paths give the same numbers as the plain computations they replace.

* ``response_logprobs`` projects only the last ``R + 1`` positions (``logits_to_keep``) — vs log-softmax over the
  full (B, P+R, V) logits, values, entropies and gradients;
* ``PolicyCriticUpdater`` accumulates token-budget micro-batches — vs the whole mini-batch in one backward,
  parameters after one SGD step (lr 1, so the step *is* the gradient);
* with one update per step the old log-probs are the current ones, detached (``old_logprobs=None``) — vs old
  log-probs from a separate no-grad pass, same loss and same update.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from searchr1.training.batch import UpdateBatch
from searchr1.training.config import AlgorithmConfig
from searchr1.training.forward import response_logprobs
from searchr1.training.update import PolicyCriticUpdater, Trainee

P, R, B, V = 5, 7, 6, 97


def tiny_policy(seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=64, tie_word_embeddings=True, use_cache=False,
    )  # fmt: skip
    return Qwen2ForCausalLM(config).float().train()


def padded_batch(seed: int = 1) -> dict[str, torch.Tensor]:
    """Prompts left-padded to P, responses right-padded to R, ragged lengths (the ``RolloutBatch`` layout)."""
    g = torch.Generator().manual_seed(seed)
    prompt_lens = torch.tensor([5, 3, 4, 1, 5, 2])
    response_lens = torch.tensor([7, 2, 5, 7, 1, 4])
    ids = torch.randint(1, V, (B, P + R), generator=g)
    attention = torch.zeros(B, P + R, dtype=torch.long)
    for i in range(B):
        attention[i, P - prompt_lens[i] : P + response_lens[i]] = 1
    ids = ids * attention  # pad id 0
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    loss_mask = attention[:, P:].float()
    loss_mask[2, 1] = 0.0  # an observation token inside a response
    return {"input_ids": ids, "attention_mask": attention, "position_ids": position_ids, "loss_mask": loss_mask}


def full_logits_reference(model, input_ids, attention_mask, position_ids, temperature):
    """Plain computation: every position's logits, log-softmax over V, response slice picked afterwards."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits  # (B, L, V)
    logp_all = torch.log_softmax(logits.float() / temperature, dim=-1)  # (B, L, V)
    pred = logp_all[:, P - 1 : -1]  # position P-1+t predicts response token t: (B, R, V)
    logprobs = pred.gather(-1, input_ids[:, P:].unsqueeze(-1)).squeeze(-1)
    entropy = -(pred.exp() * pred).sum(-1)
    return logprobs, entropy


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logits_to_keep_matches_full_logits(temperature):
    model = tiny_policy()
    data = padded_batch()
    args = (data["input_ids"], data["attention_mask"], data["position_ids"])
    fast_model, ref_model = model, copy.deepcopy(model)
    lp, ent = response_logprobs(fast_model, *args, P, temperature, with_entropy=True, entropy_grad=True)
    ref_lp, ref_ent = full_logits_reference(ref_model, *args, temperature)
    mask = data["loss_mask"]
    torch.testing.assert_close(lp * mask, ref_lp * mask, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ent * mask, ref_ent * mask, rtol=1e-5, atol=1e-5)
    # gradients of a masked objective using both outputs
    ((lp * mask).sum() + 0.1 * (ent * mask).sum()).backward()
    ((ref_lp * mask).sum() + 0.1 * (ref_ent * mask).sum()).backward()
    for (name, p), q in zip(fast_model.named_parameters(), ref_model.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=f"gradient of {name}")


def update_batch(policy, old_logprobs: torch.Tensor | None = None, seed: int = 2) -> UpdateBatch:
    data = padded_batch()
    g = torch.Generator().manual_seed(seed)
    mask = data["loss_mask"]
    with torch.no_grad():
        lp, _ = response_logprobs(policy, data["input_ids"], data["attention_mask"], data["position_ids"], P)
    # old/ref log-probs near the current ones so that some ratios clip and the KL is non-trivial
    old = (lp + 0.3 * torch.randn(B, R, generator=g)) * mask if old_logprobs is None else old_logprobs
    return UpdateBatch(
        input_ids=data["input_ids"], attention_mask=data["attention_mask"], position_ids=data["position_ids"],
        loss_mask=mask, advantages=torch.randn(B, R, generator=g) * mask, old_logprobs=old,
        ref_logprobs=(lp + 0.2 * torch.randn(B, R, generator=g)) * mask,
    )  # fmt: skip


def run_update(policy, batch: UpdateBatch, **cfg) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """One updater run (SGD, lr 1, no clipping): returns the parameter change (= −gradient) and the stats."""
    config = AlgorithmConfig(estimator="grpo", n_samples=2, max_grad_norm=0.0, kl_coef=0.01, **cfg)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    optimizer = torch.optim.SGD(policy.parameters(), lr=1.0)
    stats = PolicyCriticUpdater(config, Trainee(policy, optimizer)).run(batch, step=0)
    return {n: p.detach() - before[n] for n, p in policy.named_parameters()}, stats


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"])
@pytest.mark.parametrize("budget", [P + R, 2 * (P + R) + 3])  # 1 and 2 samples per micro-batch
def test_micro_batch_accumulation_matches_one_batch(agg, budget):
    policy = tiny_policy()
    batch = update_batch(policy)
    whole, _ = run_update(copy.deepcopy(policy), batch, loss_agg=agg, micro_token_budget=10_000)
    micro, _ = run_update(copy.deepcopy(policy), batch, loss_agg=agg, micro_token_budget=budget)
    assert any(d.abs().max() > 1e-6 for d in whole.values()), "the update must move the parameters"
    for name in whole:
        torch.testing.assert_close(micro[name], whole[name], rtol=1e-4, atol=1e-7, msg=f"update of {name}")


def test_on_policy_shortcut_matches_separate_old_logprob_pass():
    from searchr1.training.forward import batched_logprobs

    policy = tiny_policy()
    data = padded_batch()
    rollout = UpdateBatch(**data, advantages=torch.zeros_like(data["loss_mask"]))  # the rows the pass reads
    separate_old = batched_logprobs(policy, rollout, temperature=1.0, token_budget=2 * (P + R))
    with_old = update_batch(policy, old_logprobs=separate_old)
    shortcut = UpdateBatch(**{**with_old.__dict__, "old_logprobs": None})
    delta_old, stats_old = run_update(copy.deepcopy(policy), with_old)
    delta_short, stats_short = run_update(copy.deepcopy(policy), shortcut)
    assert stats_old["policy/pg_loss"] == pytest.approx(stats_short["policy/pg_loss"], rel=1e-5, abs=1e-7)
    assert stats_old["policy/kl"] == pytest.approx(stats_short["policy/kl"], rel=1e-5, abs=1e-8)
    for name in delta_old:
        torch.testing.assert_close(delta_short[name], delta_old[name], rtol=1e-4, atol=1e-7, msg=name)
