"""Pure tensor math for RL on LLMs: masked reductions, advantage estimators, policy/value/KL losses.

Shapes: B sequences × T response tokens; ``loss_mask`` (B, T) is 1 only where the policy sampled the
token. Functions take tensors and scalars, never config objects.
"""

from searchr1.algorithms.advantages import (
    ADVANTAGE_ESTIMATORS,
    AdvantageEstimator,
    AdvantageInputs,
    compute_advantages,
    gae_advantages,
    grpo_advantages,
    reinforce_pp_advantages,
    rloo_advantages,
)
from searchr1.algorithms.losses import (
    KL_ESTIMATORS,
    POLICY_LOSSES,
    entropy_from_logits,
    kl_penalty,
    ppo_policy_loss,
    value_loss,
    vanilla_policy_loss,
)
from searchr1.algorithms.masked import (
    AGGREGATIONS,
    aggregate_loss,
    masked_mean,
    masked_moments,
    masked_sum,
    masked_var,
    masked_whiten,
)

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "AGGREGATIONS",
    "AdvantageEstimator",
    "AdvantageInputs",
    "KL_ESTIMATORS",
    "POLICY_LOSSES",
    "aggregate_loss",
    "compute_advantages",
    "entropy_from_logits",
    "gae_advantages",
    "grpo_advantages",
    "kl_penalty",
    "masked_mean",
    "masked_moments",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "ppo_policy_loss",
    "reinforce_pp_advantages",
    "rloo_advantages",
    "vanilla_policy_loss",
    "value_loss",
]
