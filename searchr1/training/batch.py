"""The per-sample tensors one policy/critic update works on, and how they are cut into mini/micro-batches."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor


@dataclass
class UpdateBatch:
    """Everything the update needs, per sample (B = samples, L = P + R, R = response length).

    Attributes:
        input_ids: (B, L) prompt (left-padded) + response (right-padded).
        attention_mask: (B, L).
        position_ids: (B, L).
        loss_mask: (B, R) 1 on policy-sampled tokens.
        advantages: (B, R).
        old_logprobs: (B, R) log-probs under the rollout policy, or None when the update is fully on-policy
            (one epoch, one mini-batch: the current log-probs, detached, are then exactly the old ones).
        ref_logprobs: (B, R) reference log-probs (KL as a loss), or None.
        returns: (B, R) critic targets (GAE), or None.
        old_values: (B, R) critic values at rollout time, or None.
        rollout_logprobs: (B, R) sampling log-probs recorded by the rollout engine (0 off the loss mask), or None.
    """

    input_ids: Tensor
    attention_mask: Tensor
    position_ids: Tensor
    loss_mask: Tensor
    advantages: Tensor
    old_logprobs: Tensor | None = None
    ref_logprobs: Tensor | None = None
    returns: Tensor | None = None
    old_values: Tensor | None = None
    rollout_logprobs: Tensor | None = None

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, index: Tensor) -> UpdateBatch:
        """Rows ``index`` of every tensor field."""
        return replace(self, **{f.name: _take(getattr(self, f.name), index) for f in fields(self)})

    def micro_batches(self, token_budget: int) -> Iterator[UpdateBatch]:
        """Consecutive chunks of at most ``max(1, token_budget // L)`` samples."""
        size = samples_per_micro_batch(token_budget, self.input_ids.shape[1])
        for start in range(0, len(self), size):
            yield self.select(torch.arange(start, min(start + size, len(self)), device=self.input_ids.device))


def samples_per_micro_batch(token_budget: int, padded_length: int) -> int:
    """How many padded sequences of ``padded_length`` tokens fit in ``token_budget`` (at least one)."""
    return max(1, token_budget // padded_length)


def _take(value: Tensor | None, index: Tensor) -> Tensor | None:
    return None if value is None else value.index_select(0, index.to(value.device))


def micro_weight(micro_mask: Tensor, mini_mask: Tensor, agg: str) -> float:
    """Share of a micro-batch in its mini-batch's loss, so accumulated gradients equal the full mini-batch's.

    ``token-mean`` weighs by valid tokens; the sequence-mean modes by sequences holding >= 1 valid token.
    """
    if agg == "token-mean":
        num, den = micro_mask.sum(), mini_mask.sum()
    else:
        num, den = (micro_mask.sum(-1) > 0).sum(), (mini_mask.sum(-1) > 0).sum()
    return float(num) / float(den) if float(den) > 0 else 0.0
