"""The per-sample tensors one policy/critic update works on, and how they are cut into mini/micro-batches."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from searchr1.distributed import Lockstep
from searchr1.rollout.types import RowBatch


@dataclass
class UpdateBatch(RowBatch):
    """Everything the update needs, per sample (B = samples, L = P + R, R = response length); rows are selected
    and split as a rollout's (:class:`~searchr1.rollout.types.RowBatch`).

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
        proximal_is_current: (B,) bool, or None: rows whose old (proximal) log-probs are the policy's log-probs at
            their own update (the first mini-batch of a one-epoch update, before any weight change of the step):
            the update takes its own forward's log-probs, detached, and ``old_logprobs`` holds 0 there (the no-grad
            old pass skipped them; :func:`~searchr1.training.update.first_update_rows`).
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
    proximal_is_current: Tensor | None = None

    @property
    def seq_len(self) -> int:
        """L = P + R, the padded length of every row."""
        return self.input_ids.shape[1]

    def micro_batches(self, token_budget: int, lockstep: Lockstep | None = None) -> Iterator[tuple[UpdateBatch, bool]]:
        """``(micro_batch, is_padding)`` over chunks of at most ``max(1, token_budget // L)`` samples, taken in order
        of length (:func:`length_order`) and cut to their own padded width (:func:`trimmed`); the chunk count is
        that of ``micro_batch_ranges`` (the sum of the chunks' losses, hence the gradient, does not depend on which
        rows share a chunk).

        With an active ``lockstep`` every rank yields the largest count of any rank; the chunks beyond this rank's
        rows are padding: its first row with an all-zero ``loss_mask`` (zero loss, zero gradient), run through
        forward and backward like real work so that the collective forwards/backwards stay matched.
        """
        order = length_order(self)
        for rows in micro_batch_ranges(len(self), self.input_ids.shape[1], token_budget, lockstep):
            if len(rows):
                yield trimmed(self.select(order[rows.start : rows.stop])), False
            else:
                first = trimmed(self.select(torch.zeros(1, dtype=torch.long, device=self.input_ids.device)))
                yield replace(first, loss_mask=torch.zeros_like(first.loss_mask)), True


def length_order(batch: RowBatch) -> Tensor:
    """Row order by real length (prompt + response tokens), shortest first, ties in row order: (B,) indices.

    Consecutive rows of similar length make micro-batches with little padding once :func:`trimmed`.
    """
    return torch.sort(batch.attention_mask.sum(1), stable=True).indices


def trimmed(batch: RowBatch) -> RowBatch:
    """``batch`` without the columns that are padding in all of its rows: the first prompt columns (prompts are
    left-padded) and the last response columns (responses are right-padded). Every (B, P+R) and (B, R) field is cut
    alike, so ``prompt_length`` and R shrink and each row's tokens, positions and masks are unchanged.
    """
    width = batch.input_ids.shape[1]
    prompt, response = batch.prompt_length, width - batch.prompt_length
    keep_p = max(int(batch.attention_mask[:, :prompt].sum(1).max()), 1)
    keep_r = max(int(batch.attention_mask[:, prompt:].sum(1).max()), 1)
    if keep_p == prompt and keep_r == response:
        return batch
    cut = {}
    for name in batch._tensor_fields():
        tensor = getattr(batch, name)
        if tensor.dim() == 2 and tensor.shape[1] == width:
            cut[name] = tensor[:, prompt - keep_p : prompt + keep_r]
        elif tensor.dim() == 2 and tensor.shape[1] == response:
            cut[name] = tensor[:, :keep_r]
    return replace(batch, **cut)


def samples_per_micro_batch(token_budget: int, padded_length: int) -> int:
    """How many padded sequences of ``padded_length`` tokens fit in ``token_budget`` (at least one)."""
    return max(1, token_budget // padded_length)


def micro_batch_count(n_rows: int, padded_length: int, token_budget: int) -> int:
    """This rank's own micro-batch count: ``ceil(n_rows / samples_per_micro_batch(token_budget, padded_length))``."""
    return -(-n_rows // samples_per_micro_batch(token_budget, padded_length))


def micro_batch_ranges(
    n_rows: int, padded_length: int, token_budget: int, lockstep: Lockstep | None = None
) -> list[range]:
    """Row ranges of the micro-batches of ``n_rows`` sequences padded to ``padded_length``.

    The count is ``ceil(n_rows / samples_per_micro_batch)``, or with an active ``lockstep`` the largest count of
    any rank (each rank's own padded length and row count give its own); rows are spread evenly over the count and
    ranges past this rank's rows are empty (padding work). E.g. 5 rows of which 2 fit: ``[0:2], [2:4], [4:5]``;
    the same rows when another rank needs 7 micro-batches: five ranges of one row, then two empty ones.
    """
    count = micro_batch_count(n_rows, padded_length, token_budget)
    if lockstep is not None:
        count = lockstep.max([count])[0]
    per = -(-n_rows // count) if count else 0
    return [range(min(i * per, n_rows), min((i + 1) * per, n_rows)) for i in range(count)]


def micro_weight(micro_mask: Tensor, mini_mask: Tensor, agg: str) -> float:
    """Share of a micro-batch in its mini-batch's loss, so accumulated gradients equal the full mini-batch's.

    ``token-mean`` weighs by valid tokens; the sequence-mean modes by sequences holding >= 1 valid token.
    """
    if agg == "token-mean":
        num, den = micro_mask.sum(), mini_mask.sum()
    else:
        num, den = (micro_mask.sum(-1) > 0).sum(), (mini_mask.sum(-1) > 0).sum()
    return float(num) / float(den) if float(den) > 0 else 0.0
