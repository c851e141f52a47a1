"""The policy/critic update of one RL step: PPO epochs × shuffled mini-batches × token-budget micro-batches.

Gradients of the micro-batches of one mini-batch are accumulated with weights equal to their share of
the mini-batch's loss (``micro_weight``), so the accumulated gradient equals the full mini-batch's.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import torch

from searchr1.algorithms import POLICY_LOSSES, aggregate_loss, kl_penalty, masked_mean, value_loss
from searchr1.training.batch import UpdateBatch, micro_weight
from searchr1.training.policy import response_logprobs, response_values
from searchr1.training.rollout_correction import corrected_advantages
from searchr1.training.scaling import all_reduce_gradients, ddp_reducer_off

if TYPE_CHECKING:
    from searchr1.training.module import SearchR1Module


class PolicyCriticUpdater:
    """Runs the updates of one step on a ``SearchR1Module`` (uses its optimizers and ``manual_backward``)."""

    def __init__(self, module: SearchR1Module) -> None:
        self.module = module
        self.cfg = module.algorithm
        self.stats: dict[str, list[float]] = defaultdict(list)

    def run(self, data: UpdateBatch, step: int) -> dict[str, float]:
        """All updates for ``data``; returns metrics averaged over micro-batches."""
        optimizers = self.module.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        schedulers = self.module.lr_schedulers()
        schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
        train_policy = step >= self.cfg.critic_warmup_steps
        generator = torch.Generator().manual_seed(self.module.hparams.seed * 7 + step)
        mini = self.cfg.mini_batch_size or len(data)
        for _ in range(self.cfg.ppo_epochs):
            order = torch.randperm(len(data), generator=generator)
            for start in range(0, len(data), mini):
                batch = data.select(order[start : start + mini])
                if self.module.critic is not None:
                    self._step(optimizers[1], self.module.critic, batch, self._critic_loss)
                if train_policy:
                    self._step(optimizers[0], self.module.policy, batch, self._policy_loss)
        for i, scheduler in enumerate(schedulers):
            if i > 0 or train_policy:
                scheduler.step()
        self.stats["lr"].append(schedulers[0].get_last_lr()[0])
        return {k: sum(v) / len(v) for k, v in self.stats.items() if v}

    def _step(self, optimizer, model: torch.nn.Module, mini: UpdateBatch, loss_fn) -> None:
        """One optimizer update on a mini-batch, accumulating over micro-batches."""
        optimizer.zero_grad()
        with ddp_reducer_off(self.module.trainer.strategy.model):
            for micro in mini.micro_batches(self.cfg.micro_token_budget):
                weight = micro_weight(micro.loss_mask, mini.loss_mask, self.cfg.loss_agg)
                if weight == 0.0:
                    continue
                loss = loss_fn(micro)
                self.module.manual_backward(loss * weight)
        if self.module.averages_gradients:  # DDP: mean of the ranks' accumulated gradients (see training.scaling)
            all_reduce_gradients(model.parameters(), self.module.trainer.world_size)
        if self.cfg.max_grad_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), self.cfg.max_grad_norm)
            self.stats[f"{'critic' if model is self.module.critic else 'policy'}/grad_norm"].append(float(norm))
        optimizer.step()

    def _policy_loss(self, mb: UpdateBatch) -> torch.Tensor:
        cfg = self.cfg
        prompt_length = mb.input_ids.shape[1] - mb.loss_mask.shape[1]
        logprobs, entropy = response_logprobs(
            self.module.policy,
            mb.input_ids,
            mb.attention_mask,
            mb.position_ids,
            prompt_length,
            self.module.rollout_config.temperature,
            with_entropy=True,
            entropy_grad=cfg.entropy_coef != 0,
        )
        old = logprobs.detach() if mb.old_logprobs is None else mb.old_logprobs
        advantages = corrected_advantages(cfg, mb, old, self.stats)  # rollout/trainer mismatch (IS weights)
        loss, metrics = POLICY_LOSSES.get(cfg.policy_loss)(
            logprobs, old, advantages, mb.loss_mask,
            clip_low=cfg.clip_low, clip_high=cfg.clip_high, dual_clip=cfg.dual_clip, agg=cfg.loss_agg,
        )  # fmt: skip
        self.stats["policy/pg_loss"].append(loss.item())
        for k, v in metrics.items():
            self.stats[f"policy/{k}"].append(v.item())
        entropy_term = aggregate_loss(entropy, mb.loss_mask, cfg.loss_agg)
        self.stats["policy/entropy"].append(entropy_term.item())
        if cfg.entropy_coef:
            loss = loss - cfg.entropy_coef * entropy_term
        if mb.ref_logprobs is not None and cfg.kl_coef > 0:
            kl = aggregate_loss(kl_penalty(logprobs, mb.ref_logprobs, cfg.kl_kind), mb.loss_mask, cfg.loss_agg)
            self.stats["policy/kl"].append(kl.item())
            loss = loss + cfg.kl_coef * kl
        _check_finite(loss, "policy loss", self.module)
        return loss

    def _critic_loss(self, mb: UpdateBatch) -> torch.Tensor:
        prompt_length = mb.input_ids.shape[1] - mb.loss_mask.shape[1]
        values = response_values(self.module.critic, mb.input_ids, mb.attention_mask, mb.position_ids, prompt_length)
        loss, clipfrac = value_loss(
            values, mb.old_values, mb.returns, mb.loss_mask, self.cfg.value_clip, self.cfg.loss_agg
        )
        self.stats["critic/value_loss"].append(loss.item())
        self.stats["critic/clipfrac"].append(clipfrac.item())
        self.stats["critic/values"].append(masked_mean(values.detach(), mb.loss_mask).item())
        _check_finite(loss, "critic loss", self.module)
        return loss


def _check_finite(loss: torch.Tensor, what: str, module: SearchR1Module) -> None:
    if not torch.isfinite(loss):
        callback = getattr(module._trainer, "checkpoint_callback", None) if module._trainer is not None else None
        last = getattr(callback, "last_model_path", "") or getattr(callback, "best_model_path", "") or "none yet"
        raise FloatingPointError(
            f"{what} is {loss.item()} at rollout step {module._rollout_steps} (global step {module.global_step}); "
            f"stopping instead of training on garbage. Last good checkpoint: {last}. Resume from it with a lower "
            "learning rate or check the data/rewards of this step."
        )
