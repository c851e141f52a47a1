"""``training/optim.py``: the one warm-up formula (RL and SFT), warm-up step counts, the optimizer pair."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from searchr1.training.optim import build_optimizers, warmup_lambda, warmup_steps


def test_warmup_is_linear_from_one_over_w_then_constant():
    f = warmup_lambda(4)
    # w = 4: steps 0, 1, 2, 3 → 1/4, 2/4, 3/4, 4/4; later → 1
    assert [f(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [warmup_lambda(0)(s) for s in range(3)] == [1.0, 1.0, 1.0]


def test_warmup_steps_rounds_the_ratio_of_the_known_total():
    assert warmup_steps(0.285, 100) == 28  # round(28.5) = 28 (banker's rounding)
    assert warmup_steps(0.015, 1005) == 15  # round(15.075)
    assert warmup_steps(0.0, None) == 0  # no warm-up needs no total
    for total in (None, math.inf):
        with pytest.raises(ValueError, match="limit_train_batches"):
            warmup_steps(0.1, total)


def test_optimizers_and_schedules_of_policy_and_critic():
    policy, critic = nn.Linear(2, 1), nn.Linear(2, 1)
    opts, scheds = build_optimizers(policy, critic, policy_lr=1e-2, critic_lr=1e-1, weight_decay=0.0, warmup=(2, 0))
    assert [o.param_groups[0]["lr"] for o in opts] == [pytest.approx(1e-2 / 2), pytest.approx(1e-1)]
    for o in opts:
        o.step()
    for s in scheds:
        s.step()
    assert [o.param_groups[0]["lr"] for o in opts] == [pytest.approx(1e-2), pytest.approx(1e-1)]
    sgd = build_optimizers(
        policy,
        None,
        policy_lr=1.0,
        critic_lr=1.0,
        weight_decay=0.0,
        factories=(lambda p: torch.optim.SGD(p, 0.5), None),
    )[0]
    assert len(sgd) == 1 and isinstance(sgd[0], torch.optim.SGD) and sgd[0].param_groups[0]["lr"] == 0.5


def test_sft_uses_the_same_warmup():
    from searchr1.training.sft import SFTModule

    module = SFTModule("tiny:micro", lr=1.0, warmup_steps=3)
    module.configure_model()
    sched = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    assert [sched.lr_lambdas[0](s) for s in range(5)] == [warmup_lambda(3)(s) for s in range(5)]
