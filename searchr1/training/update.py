"""The policy/critic update of one RL step: PPO epochs × shuffled mini-batches × token-budget micro-batches.

Gradients of the micro-batches of one mini-batch are accumulated with weights equal to their share of
the mini-batch's loss (``micro_weight``), so the accumulated gradient equals the full mini-batch's.

The updater gets every collaborator explicitly (models with their optimizers and schedulers, the backward
function, the gradient-sync hook, the rank agreement), so it runs and tests without a Trainer or a module.
Multi-rank: micro-batch counts are agreed across ranks and padded with zero-weight micro-batches that still run
forward and backward (a sharded forward/backward is a collective), and a non-finite loss on any rank stops every
rank with the same message.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from searchr1.algorithms import POLICY_LOSSES, aggregate_loss, kl_penalty, masked_mean, value_loss
from searchr1.distributed import Lockstep
from searchr1.training.batch import UpdateBatch, micro_batch_count, micro_weight
from searchr1.training.config import AlgorithmConfig
from searchr1.training.forward import response_logprobs, response_values
from searchr1.training.rollout_correction import corrected_advantages


@dataclass
class Trainee:
    """A model the update steps, with its optimizer and LR scheduler (None: no schedule)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None


def _shuffle(n_rows: int, seed: int, step: int) -> Callable[[], Tensor]:
    """The mini-batch order of each PPO epoch of ``step``: successive calls give the epochs' permutations."""
    generator = torch.Generator().manual_seed(seed * 7 + step)
    return lambda: torch.randperm(n_rows, generator=generator)


def first_update_rows(n_rows: int, cfg: AlgorithmConfig, seed: int, step: int) -> Tensor | None:
    """Rows of ``step``'s first policy mini-batch, when the update can supply their old log-probs itself: (k,).

    With one PPO epoch the first mini-batch is updated before any weight of the step changes, so its proximal
    ("old") log-probs are exactly the update forward's own log-probs, detached (verl skips the old pass the same
    way when the update is on-policy); the no-grad old pass needs only the other rows. None when nothing is saved:
    several epochs (the rows come back after updates), or one mini-batch (the whole old pass is skipped already).
    """
    mini = cfg.mini_batch_size or n_rows
    if cfg.ppo_epochs != 1 or mini >= n_rows:
        return None
    return _shuffle(n_rows, seed, step)()[:mini]


def _plain_backward(loss: Tensor) -> None:
    loss.backward()


class PolicyCriticUpdater:
    """Runs the updates of one step.

    Args:
        cfg: the algorithm settings (losses, clipping, epochs, mini-batch size, token budget).
        policy: the policy with its optimizer/scheduler.
        critic: the critic with its optimizer/scheduler, or None (GRPO).
        temperature: the rollout temperature (log-probs are computed on ``logits / temperature``).
        seed: base seed of the mini-batch shuffling (``seed * 7 + step``).
        backward: runs the backward pass of a loss (the module's ``manual_backward``; default ``loss.backward()``).
        sync_gradients: called with a model after its micro-batches and before clipping (DDP: all-reduce the
            accumulated gradients); None when the strategy reduces gradients itself (FSDP2) or with one process.
        lockstep: the rank agreement (micro-batch counts, non-finite losses); None with one process.
        failure_context: extra text for the non-finite-loss error (step, last good checkpoint).
    """

    def __init__(
        self,
        cfg: AlgorithmConfig,
        policy: Trainee,
        critic: Trainee | None = None,
        *,
        temperature: float = 1.0,
        seed: int = 0,
        backward: Callable[[Tensor], None] = _plain_backward,
        sync_gradients: Callable[[nn.Module], None] | None = None,
        lockstep: Lockstep | None = None,
        failure_context: Callable[[], str] = lambda: "",
    ) -> None:
        self.cfg, self.policy, self.critic = cfg, policy, critic
        self.temperature, self.seed = temperature, seed
        self.backward, self.sync_gradients = backward, sync_gradients
        self.lockstep, self.failure_context = lockstep, failure_context
        self.stats: dict[str, list[float]] = defaultdict(list)

    def run(self, data: UpdateBatch, step: int) -> dict[str, float]:
        """All updates for ``data``; returns metrics averaged over (real) micro-batches."""
        train_policy = step >= self.cfg.critic_warmup_steps
        shuffle = _shuffle(len(data), self.seed, step)
        mini = self.cfg.mini_batch_size or len(data)
        for epoch in range(self.cfg.ppo_epochs):
            order = shuffle()
            if epoch == 0:
                _check_proximal_rows(data, order[:mini], self.cfg.ppo_epochs)
            for start in range(0, len(data), mini):
                batch = data.select(order[start : start + mini])
                if self.critic is not None:
                    self._step(self.critic, batch, self._critic_loss, "critic")
                if train_policy:
                    self._step(self.policy, batch, self._policy_loss, "policy")
        if self.critic is not None and self.critic.scheduler is not None:
            self.critic.scheduler.step()
        if self.policy.scheduler is not None:
            if train_policy:
                self.policy.scheduler.step()
            self.stats["lr"].append(self.policy.scheduler.get_last_lr()[0])
        return {k: sum(v) / len(v) for k, v in self.stats.items() if v}

    def _step(self, trainee: Trainee, mini: UpdateBatch, loss_fn, name: str) -> None:
        """One optimizer update on a mini-batch, accumulating over micro-batches (padding ones weigh 0)."""
        trainee.optimizer.zero_grad()
        budget, count = self.cfg.micro_token_budget, 0
        for micro, padding in mini.micro_batches(budget, self.lockstep):
            count += 1
            weight = 0.0 if padding else micro_weight(micro.loss_mask, mini.loss_mask, self.cfg.loss_agg)
            loss = loss_fn(micro, record=not padding)
            self._check_finite(loss, f"{name} loss")
            self.backward(loss * weight)
        # micro-batches beyond this rank's own count (another rank needed more: rows split finer, or padding)
        self.stats["lockstep_added_micro_batches"].append(count - micro_batch_count(len(mini), mini.seq_len, budget))
        if self.sync_gradients is not None:
            self.sync_gradients(trainee.model)
        if self.cfg.max_grad_norm > 0:
            # FSDP2 (DTensor) parameters: the global norm over all shards, equal on every rank
            norm = torch.nn.utils.clip_grad_norm_(trainee.model.parameters(), self.cfg.max_grad_norm)
            self.stats[f"{name}/grad_norm"].append(float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm))
        trainee.optimizer.step()

    def _policy_loss(self, mb: UpdateBatch, record: bool = True) -> Tensor:
        cfg = self.cfg
        logprobs, entropy = response_logprobs(
            self.policy.model,
            mb.input_ids,
            mb.attention_mask,
            mb.position_ids,
            mb.prompt_length,
            self.temperature,
            with_entropy=True,
            entropy_grad=cfg.entropy_coef != 0,
        )
        old = logprobs.detach() if mb.old_logprobs is None else mb.old_logprobs
        if mb.proximal_is_current is not None and mb.old_logprobs is not None:  # rows the old pass skipped
            old = torch.where(mb.proximal_is_current[:, None], logprobs.detach(), old)
        # rollout/trainer mismatch correction (IS weights on the advantages)
        advantages = corrected_advantages(cfg, mb, old, self.stats if record else defaultdict(list))
        loss, metrics = POLICY_LOSSES.get(cfg.policy_loss)(
            logprobs, old, advantages, mb.loss_mask,
            clip_low=cfg.clip_low, clip_high=cfg.clip_high, dual_clip=cfg.dual_clip, agg=cfg.loss_agg,
        )  # fmt: skip
        record_stat = self.stats.__getitem__ if record else lambda _: []
        record_stat("policy/pg_loss").append(loss.item())
        for k, v in metrics.items():
            record_stat(f"policy/{k}").append(v.item())
        entropy_term = aggregate_loss(entropy, mb.loss_mask, cfg.loss_agg)
        record_stat("policy/entropy").append(entropy_term.item())
        if cfg.entropy_coef:
            loss = loss - cfg.entropy_coef * entropy_term
        if mb.ref_logprobs is not None and cfg.kl_coef > 0:
            kl = aggregate_loss(kl_penalty(logprobs, mb.ref_logprobs, cfg.kl_kind), mb.loss_mask, cfg.loss_agg)
            record_stat("policy/kl").append(kl.item())
            loss = loss + cfg.kl_coef * kl
        return loss

    def _critic_loss(self, mb: UpdateBatch, record: bool = True) -> Tensor:
        values = response_values(self.critic.model, mb.input_ids, mb.attention_mask, mb.position_ids, mb.prompt_length)
        loss, clipfrac = value_loss(
            values, mb.old_values, mb.returns, mb.loss_mask, self.cfg.value_clip, self.cfg.loss_agg
        )
        if record:
            self.stats["critic/value_loss"].append(loss.item())
            self.stats["critic/clipfrac"].append(clipfrac.item())
            self.stats["critic/values"].append(masked_mean(values.detach(), mb.loss_mask).item())
        return loss

    def _check_finite(self, loss: Tensor, what: str) -> None:
        """Stop (every rank, same message) when ``loss`` is NaN/inf on any rank."""
        message = None
        if not torch.isfinite(loss):
            message = (
                f"{what} is {loss.item()}{self.failure_context()}; stopping instead of training on garbage. "
                "Resume from the last good checkpoint with a lower learning rate, or check the step's data/rewards."
            )
        if self.lockstep is not None:
            self.lockstep.raise_together(message)
        elif message is not None:
            raise FloatingPointError(message)


def _check_proximal_rows(data: UpdateBatch, first: Tensor, epochs: int) -> None:
    """Stop when rows marked ``proximal_is_current`` are not exactly the first mini-batch of a one-epoch update
    (their old log-probs would be taken after a weight change)."""
    marked = data.proximal_is_current
    if marked is None or data.old_logprobs is None:
        return
    expected = torch.zeros_like(marked)
    expected[first.to(marked.device)] = True
    if epochs != 1 or not torch.equal(marked, expected):
        raise ValueError(
            "proximal_is_current must mark exactly the first mini-batch of a one-epoch update "
            "(first_update_rows with the updater's seed and step)"
        )
