"""QA rewards: exact match (Search-R1's outcome reward), F1, substring match and a format-aware variant.

A reward is any callable ``(response: str, golden_answers: str | list[str]) -> float``; built-ins are
registered by name in ``REWARDS`` and resolved with ``get_reward``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from searchr1.registry import Registry
from searchr1.rewards.format import EMFormatReward, is_valid_structure, retrieval_has_answer
from searchr1.rewards.qa import (
    em_reward,
    exact_match,
    extract_answer,
    f1_reward,
    f1_score,
    normalize_answer,
    substring_match,
    substring_reward,
)

RewardFn = Callable[[str, Any], float]

REWARDS: Registry[Callable[..., RewardFn]] = Registry("reward")
REWARDS.register("em", "exact_match")(lambda: em_reward)
REWARDS.register("f1")(lambda: f1_reward)
REWARDS.register("substring", "cover_em")(lambda: substring_reward)
REWARDS.register("em_format")(EMFormatReward)


def get_reward(reward: str | RewardFn, **kwargs: Any) -> RewardFn:
    """Resolve a reward by registered name (``kwargs`` go to its factory) or pass a callable through."""
    if callable(reward):
        if kwargs:
            raise ValueError("reward kwargs are only used with a registered reward name, not a callable")
        return reward
    return REWARDS.get(reward)(**kwargs)


__all__ = [
    "REWARDS",
    "EMFormatReward",
    "RewardFn",
    "em_reward",
    "exact_match",
    "extract_answer",
    "f1_reward",
    "f1_score",
    "get_reward",
    "is_valid_structure",
    "normalize_answer",
    "retrieval_has_answer",
    "substring_match",
    "substring_reward",
]
