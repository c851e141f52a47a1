"""Optimizers and warm-up schedules for policy and critic (constant LR after a linear warm-up, as Search-R1)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch.optim.lr_scheduler import LambdaLR

if TYPE_CHECKING:
    from searchr1.training.module import SearchR1Module


def warmup_lambda(warmup_steps: int):
    """LR multiplier: linear from 1/(w+1) up to 1 over ``warmup_steps`` steps, then 1."""
    return lambda step: min(1.0, (step + 1) / (warmup_steps + 1)) if warmup_steps > 0 else 1.0


def _total_steps(module: SearchR1Module) -> int | None:
    try:
        total = module.trainer.estimated_stepping_batches
    except Exception:  # no trainer attached (plain use) or unknown length
        return None
    return int(total) if total is not None and math.isfinite(total) else None


def _warmup_steps(module: SearchR1Module, ratio: float) -> int:
    if ratio <= 0:
        return 0
    total = _total_steps(module)
    if total is None:
        raise ValueError(
            "an LR warm-up ratio needs a known number of steps: set trainer.limit_train_batches (rollout steps "
            "per epoch) with trainer.max_epochs, or set the warm-up ratio to 0"
        )
    return round(ratio * total)


def build_optimizers(module: SearchR1Module, policy_factory=None, critic_factory=None):
    """Policy optimizer/scheduler, then the critic's when there is a critic (Lightning's list form)."""
    hp = module.hparams
    opt = (policy_factory or _adamw(hp.policy_lr, hp.weight_decay))(module.policy.parameters())
    optimizers = [opt]
    schedulers = [LambdaLR(opt, warmup_lambda(_warmup_steps(module, hp.lr_warmup_ratio)))]
    if module.critic is not None:
        copt = (critic_factory or _adamw(hp.critic_lr, hp.weight_decay))(module.critic.parameters())
        optimizers.append(copt)
        schedulers.append(LambdaLR(copt, warmup_lambda(_warmup_steps(module, hp.critic_lr_warmup_ratio))))
    return optimizers, schedulers


def _adamw(lr: float, weight_decay: float):
    return lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999))
