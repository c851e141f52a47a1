"""Optimizers and warm-up schedules for policy and critic (constant LR after a linear warm-up, as Search-R1)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from searchr1.models import trainable_parameters


def warmup_lambda(warmup_steps: int):
    """LR multiplier: ``(step + 1) / w`` for the first ``w = warmup_steps`` steps (1/w up to 1: the full rate is
    reached at step ``w - 1``), then 1. SFT's formula; the shipped warm start was trained with it."""
    return lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


def warmup_steps(ratio: float, total_steps: float | None) -> int:
    """``round(ratio * total_steps)``; a positive ratio needs a known, finite number of steps."""
    if ratio <= 0:
        return 0
    if total_steps is None or not math.isfinite(total_steps):
        raise ValueError(
            "an LR warm-up ratio needs a known number of steps: set trainer.limit_train_batches (rollout steps "
            "per epoch) with trainer.max_epochs, or set the warm-up ratio to 0"
        )
    return round(ratio * total_steps)


def build_optimizers(
    policy: nn.Module,
    critic: nn.Module | None,
    *,
    policy_lr: float,
    critic_lr: float,
    weight_decay: float,
    warmup: tuple[int, int] = (0, 0),
    factories: tuple[Callable | None, Callable | None] = (None, None),
):
    """Policy optimizer/scheduler, then the critic's when there is a critic (Lightning's list form).

    Args:
        policy, critic: the models (their parameters: fp32 masters, or FSDP2 fp32 shards); only the parameters that
            train are stepped (the adapters under LoRA), so the optimizer state holds nothing for frozen weights.
        policy_lr, critic_lr, weight_decay: settings of the default AdamW optimizers.
        warmup: warm-up steps of the policy and critic schedules.
        factories: user optimizer factories (``OptimizerCallable``) replacing the default AdamW.
    """
    opt = (factories[0] or _adamw(policy_lr, weight_decay))(trainable_parameters(policy))
    optimizers, schedulers = [opt], [LambdaLR(opt, warmup_lambda(warmup[0]))]
    if critic is not None:
        copt = (factories[1] or _adamw(critic_lr, weight_decay))(trainable_parameters(critic))
        optimizers.append(copt)
        schedulers.append(LambdaLR(copt, warmup_lambda(warmup[1])))
    return optimizers, schedulers


def _adamw(lr: float, weight_decay: float):
    return lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999))
