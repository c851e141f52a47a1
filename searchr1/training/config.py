"""Algorithm knobs of the RL update, grouped in one validated dataclass.

PPO (Search-R1's default) = ``estimator="gae"`` with a critic, KL in the reward (``k1``, coef 0.001),
``n_samples=1``. GRPO = ``estimator="grpo"``, no critic, KL as a loss (``k3``), ``n_samples=5``.
"""

from __future__ import annotations

from dataclasses import dataclass

from searchr1.algorithms import ADVANTAGE_ESTIMATORS, AGGREGATIONS, KL_ESTIMATORS, POLICY_LOSSES
from searchr1.algorithms.correction import CORRECTION_LEVELS, ROLLOUT_CORRECTIONS


@dataclass
class AlgorithmConfig:
    """How one rollout batch becomes policy (and critic) updates."""

    estimator: str = "grpo"
    """Advantage estimator: ``gae`` (PPO, needs a critic), ``grpo``, ``rloo``, ``reinforce_pp``."""
    n_samples: int = 5
    """Responses sampled per prompt (the GRPO/RLOO group size); 1 for PPO."""
    gamma: float = 1.0
    """Discount factor."""
    lam: float = 1.0
    """GAE λ."""
    policy_loss: str = "ppo"
    """Policy loss: ``ppo`` (clipped surrogate) or ``vanilla`` (unclipped importance-weighted PG)."""
    clip_low: float = 0.2
    """PPO clip ε below 1."""
    clip_high: float = 0.2
    """PPO clip ε above 1 (raise it for DAPO's clip-higher)."""
    dual_clip: float | None = None
    """Dual-clip constant c > 1 for negative advantages, or None."""
    loss_agg: str = "token-mean"
    """Loss aggregation: ``token-mean``, ``seq-mean-token-sum``, ``seq-mean-token-mean``."""
    kl_coef: float = 0.001
    """KL coefficient β; 0 disables KL and the reference model is not built."""
    kl_kind: str = "k3"
    """KL estimator: ``k1``/``kl``, ``abs``, ``k2``/``mse``, ``k3``/``low_var_kl``."""
    kl_in_reward: bool = False
    """True: subtract β·KL from the token rewards (PPO, Search-R1); False: add β·KL to the loss (GRPO)."""
    entropy_coef: float = 0.0
    """Entropy bonus coefficient (subtracted from the policy loss)."""
    value_clip: float = 0.5
    """Critic value clip range."""
    ppo_epochs: int = 1
    """Passes over the rollout batch per step."""
    mini_batch_size: int | None = None
    """Sequences per optimizer update (None: the whole batch, one update per epoch)."""
    micro_token_budget: int = 2048
    """Padded tokens per forward/backward micro-batch (gradient accumulation splits mini-batches by it; the
    gradient is the same for any budget — raise it on GPUs for speed, lower it to save activation memory)."""
    max_grad_norm: float = 1.0
    """Gradient clipping (L2 norm) for policy and critic; 0 disables."""
    critic_warmup_steps: int = 0
    """Rollout steps during which only the critic is trained (verl's ``critic_warmup``)."""
    rollout_correction: str = "none"
    """Rollout/trainer mismatch correction of the policy loss, from ρ = π_old/π_rollout per token (the engine's
    sampling log-probs): ``none``, ``tis`` (weight min(ρ, C)) or ``mis`` (drop tokens/sequences with ρ outside
    [1/C, C]); see ``searchr1.algorithms.correction``. Its metrics are logged whatever the mode."""
    rollout_correction_threshold: float = 2.0
    """C > 1 of ``rollout_correction``."""
    rollout_correction_level: str = "token"
    """``token``: one ratio per token; ``sequence``: the product of the sequence's token ratios."""

    def __post_init__(self) -> None:
        ADVANTAGE_ESTIMATORS.get(self.estimator)
        POLICY_LOSSES.get(self.policy_loss)
        AGGREGATIONS.get(self.loss_agg)
        KL_ESTIMATORS.get(self.kl_kind)
        if self.n_samples < 1:
            raise ValueError(f"algorithm.n_samples must be >= 1, got {self.n_samples}")
        if self.estimator in ("grpo", "rloo") and self.n_samples < 2:
            raise ValueError(
                f"algorithm.estimator={self.estimator!r} compares samples of the same prompt: set "
                f"algorithm.n_samples >= 2 (Search-R1 uses 5), got {self.n_samples}"
            )
        if self.ppo_epochs < 1:
            raise ValueError(f"algorithm.ppo_epochs must be >= 1, got {self.ppo_epochs}")
        if self.mini_batch_size is not None and self.mini_batch_size < 1:
            raise ValueError(f"algorithm.mini_batch_size must be >= 1 or null, got {self.mini_batch_size}")
        if self.micro_token_budget < 1:
            raise ValueError(f"algorithm.micro_token_budget must be >= 1, got {self.micro_token_budget}")
        ROLLOUT_CORRECTIONS.get(self.rollout_correction)
        if self.rollout_correction_level not in CORRECTION_LEVELS:
            raise ValueError(
                f"algorithm.rollout_correction_level must be one of {CORRECTION_LEVELS}, "
                f"got {self.rollout_correction_level!r}"
            )
        if not self.rollout_correction_threshold > 1.0:
            raise ValueError(
                f"algorithm.rollout_correction_threshold (C) must be > 1, got {self.rollout_correction_threshold}"
            )
        if self.kl_coef < 0:
            raise ValueError(f"algorithm.kl_coef must be >= 0, got {self.kl_coef}")

    @property
    def needs_critic(self) -> bool:
        """Whether the estimator uses a value function."""
        return ADVANTAGE_ESTIMATORS.get(self.estimator).needs_critic

    @property
    def kl_path(self) -> str:
        """Where the KL term acts: ``"reward"`` (β·KL subtracted from the token rewards), ``"loss"`` or ``"off"``."""
        if self.kl_coef == 0:
            return "off"
        return "reward" if self.kl_in_reward else "loss"

    @property
    def uses_reference(self) -> bool:
        """Whether a frozen reference model is needed (any KL term)."""
        return self.kl_coef > 0
