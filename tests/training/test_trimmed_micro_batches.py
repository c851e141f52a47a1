"""Micro-batches take rows in order of length and drop the columns that are padding in all of their rows: every
row is computed once, with the same numbers as in the full padded batch."""

from __future__ import annotations

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from searchr1.training.batch import UpdateBatch, length_order, trimmed
from searchr1.training.forward import _micro_batched, response_logprobs

P, R, V = 4, 5, 40


def batch() -> UpdateBatch:
    """3 rows: prompt lengths 2, 4, 1 (left-padded), response lengths 1, 5, 2 (right-padded)."""
    prompt = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]])
    response = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    attention = torch.cat([prompt, response], 1)
    ids = torch.arange(1, 1 + 3 * (P + R)).reshape(3, P + R) % V * attention
    return UpdateBatch(
        input_ids=ids,
        attention_mask=attention,
        position_ids=(attention.cumsum(1) - 1).clamp(min=0),
        loss_mask=response.float(),
        advantages=torch.arange(15.0).reshape(3, R) * response,
        proximal_is_current=torch.tensor([True, False, False]),
    )


def test_trimmed_drops_only_columns_padded_in_every_row():
    data = batch()
    assert length_order(data).tolist() == [0, 2, 1]  # 3, 3, 9 real tokens: shortest first, ties in row order
    short = trimmed(data.select([0, 2]))  # prompts of 2 and 1 tokens, responses of 1 and 2
    assert short.prompt_length == 2 and short.loss_mask.shape == (2, 2)
    assert short.input_ids.tolist() == [[3, 4, 5, 0], [0, 22, 23, 24]]
    assert short.proximal_is_current.tolist() == [True, False]  # per-row fields are kept
    assert trimmed(data) is data  # the longest row fills every column


def test_micro_batched_log_probs_equal_the_full_batch_in_row_order():
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=V, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
        intermediate_size=32, max_position_embeddings=32, tie_word_embeddings=True, use_cache=False,
    )  # fmt: skip
    model = Qwen2ForCausalLM(config).float().eval()
    data = batch()

    def forward(mb):
        return response_logprobs(model, mb.input_ids, mb.attention_mask, mb.position_ids, mb.prompt_length)[0]

    with torch.no_grad():
        full = forward(data) * data.loss_mask
        split = _micro_batched(forward, data, token_budget=P + R, lockstep=None) * data.loss_mask  # 1 row each
    torch.testing.assert_close(split, full, rtol=0, atol=1e-6)
    assert (full != 0).sum() == data.loss_mask.sum()
