"""The forward passes the RL update needs: response log-probs and critic values, and their batched no-grad runs.

Layout (from ``RolloutBatch``): prompts left-padded to P, responses right-padded to R, so the logits
that predict response token t sit at position ``P - 1 + t``. Only the last ``R + 1`` positions are
projected to the vocabulary (``logits_to_keep``) and the log-softmax is taken per micro-batch, so the
full (B, P+R, V) logits are never materialised.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from searchr1.algorithms import entropy_from_logits
from searchr1.distributed import Lockstep
from searchr1.models import ValueModel
from searchr1.rollout import RolloutBatch
from searchr1.training.batch import length_order, micro_batch_ranges, trimmed


def response_logprobs(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    position_ids: Tensor,
    prompt_length: int,
    temperature: float = 1.0,
    with_entropy: bool = False,
    entropy_grad: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Log-probs of the response tokens under ``model`` (and optionally the per-token entropy).

    Args:
        model: a causal LM.
        input_ids: (B, P+R) prompt (left-padded) + response (right-padded) ids.
        attention_mask: (B, P+R).
        position_ids: (B, P+R).
        prompt_length: P.
        temperature: logits are divided by it, matching the sampling distribution of the rollout.
        with_entropy: also return the entropy of the (tempered) distribution at each response position.
        entropy_grad: keep the entropy in the autograd graph (only needed for an entropy bonus; without it the
            (B, R, V) softmax tensors are not kept for backward).

    Returns:
        ``(logprobs, entropy)``: (B, R) float32 each (entropy None unless asked).
    """
    response_length = input_ids.shape[1] - prompt_length
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=False,
        logits_to_keep=response_length + 1,
    )
    logits = out.logits[:, :-1, :].float()  # (B, R, V)
    if temperature != 1.0:
        logits = logits / temperature
    responses = input_ids[:, prompt_length:]  # (B, R)
    # selective log-softmax: no (B, R, V) log-prob tensor is materialised
    logprobs = logits.gather(-1, responses.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    entropy = None
    if with_entropy:
        entropy = entropy_from_logits(logits if entropy_grad else logits.detach())
    return logprobs, entropy


def response_values(
    critic: ValueModel, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, prompt_length: int
):
    """Critic values of the states before each response token: (B, P+R) inputs → (B, R)."""
    values = critic(input_ids, attention_mask, position_ids)  # (B, P+R)
    return values[:, prompt_length - 1 : -1]


@torch.no_grad()
def batched_logprobs(
    model: nn.Module, rollout: RolloutBatch, temperature: float, token_budget: int, lockstep: Lockstep | None = None
) -> Tensor:
    """Response log-probs of the whole rollout under ``model`` in micro-batches, no grad: (B, R).

    With an active ``lockstep`` (sharded models: every forward is a collective) every rank runs the largest
    micro-batch count of any rank; its extra forwards run on one of its rows and are discarded.
    """

    def forward(mb: RolloutBatch) -> Tensor:
        lp, _ = response_logprobs(
            model, mb.input_ids, mb.attention_mask, mb.position_ids, mb.prompt_length, temperature
        )
        return lp

    return _micro_batched(forward, rollout, token_budget, lockstep) * rollout.loss_mask


def old_logprobs_except(
    model: nn.Module,
    rollout: RolloutBatch,
    temperature: float,
    token_budget: int,
    skip: Tensor | None,
    lockstep: Lockstep | None = None,
) -> tuple[Tensor, Tensor | None]:
    """The old log-probs pass without the rows ``skip`` (k,) whose old log-probs the update takes from its own
    forward (:func:`~searchr1.training.update.first_update_rows`).

    Returns:
        ``(old_logprobs, proximal_is_current)``: (B, R), 0 on the skipped rows; (B,) bool marking them (None when
        ``skip`` is None: every row computed).
    """
    if skip is None:
        return batched_logprobs(model, rollout, temperature, token_budget, lockstep), None
    skipped = torch.zeros(len(rollout), dtype=torch.bool, device=rollout.loss_mask.device)
    skipped[skip.to(skipped.device)] = True
    rest = (~skipped).nonzero().squeeze(-1)
    old = torch.zeros(rollout.loss_mask.shape, dtype=torch.float32, device=rollout.loss_mask.device)
    old[rest] = batched_logprobs(model, rollout.select(rest), temperature, token_budget, lockstep)
    return old, skipped


@torch.no_grad()
def batched_values(
    critic: ValueModel, rollout: RolloutBatch, token_budget: int, lockstep: Lockstep | None = None
) -> Tensor:
    """Critic values of the whole rollout in micro-batches, no grad: (B, R), 0 off the loss mask."""

    def forward(mb: RolloutBatch) -> Tensor:
        return response_values(critic, mb.input_ids, mb.attention_mask, mb.position_ids, mb.prompt_length)

    return _micro_batched(forward, rollout, token_budget, lockstep) * rollout.loss_mask


def _micro_batched(forward, rollout: RolloutBatch, token_budget: int, lockstep: Lockstep | None) -> Tensor:
    """``forward`` (a (k, R') output per micro-batch) over the micro-batches of ``rollout`` — rows in order of length,
    each micro-batch cut to its own padded width — put back in row order at full width (B, R), 0 beyond a
    micro-batch's width; padding micro-batches run on the first row and their outputs are dropped."""
    order = length_order(rollout)
    out = None
    for rows in micro_batch_ranges(len(rollout), rollout.input_ids.shape[1], token_budget, lockstep):
        if not len(rows):
            forward(trimmed(rollout.select([0])))
            continue
        index = order[rows.start : rows.stop]
        part = forward(trimmed(rollout.select(index)))
        if out is None:
            out = part.new_zeros(rollout.loss_mask.shape)
        out[index.to(out.device), : part.shape[1]] = part
    return out
