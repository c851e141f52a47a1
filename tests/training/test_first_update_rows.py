"""The old log-prob pass skips the rows of the update's first mini-batch (one PPO epoch): the update takes their old
(proximal) log-probs from its own forward, detached — exactly the numbers the skipped pass would have given, so the
losses, statistics and the update itself are unchanged."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from searchr1.training.batch import UpdateBatch, length_order
from searchr1.training.config import AlgorithmConfig
from searchr1.training.forward import old_logprobs_except, response_logprobs
from searchr1.training.update import PolicyCriticUpdater, Trainee, first_update_rows

P, R, V, SEED, STEP = 3, 4, 50, 5, 2


def policy() -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=V, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
        intermediate_size=32, max_position_embeddings=32, tie_word_embeddings=True, use_cache=False,
    )  # fmt: skip
    return Qwen2ForCausalLM(config).float().train()


def batch() -> UpdateBatch:
    """4 rows: prompts left-padded to P, responses right-padded to R; advantages ±1, behaviour log-probs off by
    0.5 so that the TIS weights depend on the old log-probs."""
    g = torch.Generator().manual_seed(1)
    prompt = torch.tensor([[1, 1, 1], [0, 1, 1], [1, 1, 1], [0, 0, 1]])
    response = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]])
    attention = torch.cat([prompt, response], 1)
    loss_mask = response.float()
    return UpdateBatch(
        input_ids=torch.randint(1, V, (4, P + R), generator=g) * attention,
        attention_mask=attention,
        position_ids=(attention.cumsum(1) - 1).clamp(min=0),
        loss_mask=loss_mask,
        advantages=torch.tensor([[1.0], [-1.0], [1.0], [-1.0]]) * loss_mask,
        rollout_logprobs=torch.full((4, R), -4.5) * loss_mask,
    )


def config(**kw) -> AlgorithmConfig:
    base = dict(estimator="grpo", n_samples=2, mini_batch_size=2, max_grad_norm=0.0, kl_coef=0.0)
    return AlgorithmConfig(**{**base, "rollout_correction": "tis", "rollout_correction_threshold": 2.0, **kw})


def update(model, data: UpdateBatch, cfg: AlgorithmConfig) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """One updater run (SGD, lr 1): the parameter change (= −gradient of each mini-batch in turn) and the stats."""
    model = copy.deepcopy(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    updater = PolicyCriticUpdater(cfg, Trainee(model, torch.optim.SGD(model.parameters(), lr=1.0)), seed=SEED)
    stats = updater.run(data, step=STEP)
    return {n: p.detach() - before[n] for n, p in model.named_parameters()}, stats


def logprobs(model, data: UpdateBatch, prompt_length: int = P) -> torch.Tensor:
    """(B, R') no-grad response log-probs of ``data`` (R' its own width), 0 off the loss mask."""
    with torch.no_grad():
        lp, _ = response_logprobs(model, data.input_ids, data.attention_mask, data.position_ids, prompt_length)
    return lp * data.loss_mask


def test_first_update_rows_are_the_updaters_first_mini_batch():
    cfg = config()
    first = first_update_rows(4, cfg, SEED, STEP)
    assert first.tolist() == torch.randperm(4, generator=torch.Generator().manual_seed(SEED * 7 + STEP))[:2].tolist()
    assert first_update_rows(4, config(ppo_epochs=2), SEED, STEP) is None  # the rows come back after an update
    assert first_update_rows(4, config(mini_batch_size=4), SEED, STEP) is None  # no old pass at all


def test_skipping_the_first_mini_batch_changes_no_loss_and_no_update():
    model, data, cfg = policy(), batch(), config()
    first = first_update_rows(len(data), cfg, SEED, STEP)
    old, marked = old_logprobs_except(model, data, 1.0, token_budget=10_000, skip=first)
    assert marked.tolist() == [i in first.tolist() for i in range(4)]
    assert (old[first] == 0).all() and torch.allclose(old[~marked], logprobs(model, data)[~marked], atol=1e-6)
    # the reference: the pass over every row, the first mini-batch's rows through the same forward as the update's
    # first micro-batch (so that the numbers are bit for bit the update's own)
    (micro, _), *more = data.select(first).micro_batches(10_000)
    assert not more
    full_old, own = old.clone(), logprobs(model, micro, micro.prompt_length)
    full_old[first[length_order(data.select(first))], : own.shape[1]] = own
    with_pass, stats_pass = update(model, replace(data, old_logprobs=full_old), cfg)
    skipped, stats_skip = update(model, replace(data, old_logprobs=old, proximal_is_current=marked), cfg)
    assert stats_skip == stats_pass  # pg loss, clip fractions, TIS weights: identical
    assert stats_pass["rollout_correction/ratio_mean"] > 1.0  # π_prox / π_behav enters the loss
    for name in with_pass:
        assert torch.equal(skipped[name], with_pass[name]), name
    assert any(d.abs().max() > 0 for d in with_pass.values())


def test_marked_rows_outside_the_first_mini_batch_are_refused():
    model, data, cfg = policy(), batch(), config()
    first = first_update_rows(len(data), cfg, SEED, STEP)
    wrong = torch.ones(4, dtype=torch.bool)
    wrong[first[0]] = False
    with pytest.raises(ValueError, match="first mini-batch"):
        update(model, replace(data, old_logprobs=logprobs(model, data), proximal_is_current=wrong), cfg)
