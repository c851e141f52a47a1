"""QA rewards: exact match (Search-R1's outcome reward), F1, substring match and a format-aware variant.

A reward is any callable ``(trajectory, golden_answers: str | list[str]) -> float``; it gets the
:class:`~searchr1.rollout.Trajectory` (answers are read from its policy chunks with ``policy_answer``, the whole
text is ``trajectory.response_text``). Built-ins are registered by name in ``REWARDS`` and resolved with
``get_reward``; they also take a plain string (read as text the policy wrote in full). ``score_trajectory`` is
the one scorer (answer, EM, F1, substring) of training metrics, validation and ``searchr1-eval``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from searchr1.protocols import extract_answer
from searchr1.registry import Registry
from searchr1.rewards.format import EMFormatReward, is_valid_structure, retrieval_has_answer
from searchr1.rewards.qa import (
    AnswerScore,
    em_reward,
    exact_match,
    f1_reward,
    f1_score,
    normalize_answer,
    policy_answer,
    score_answer,
    score_trajectory,
    substring_match,
    substring_reward,
)

RewardFn = Callable[[Any, Any], float]

REWARDS: Registry[Callable[..., RewardFn]] = Registry("reward")
REWARDS.register("em", "exact_match")(lambda: em_reward)
REWARDS.register("f1")(lambda: f1_reward)
REWARDS.register("substring", "cover_em")(lambda: substring_reward)
REWARDS.register("em_format", "qa_em_format")(EMFormatReward)


def get_reward(reward: str | RewardFn, **kwargs: Any) -> RewardFn:
    """Resolve a reward by registered name (``kwargs`` go to its factory) or pass a callable through."""
    if callable(reward):
        if kwargs:
            raise ValueError("reward kwargs are only used with a registered reward name, not a callable")
        return reward
    return REWARDS.get(reward)(**kwargs)


__all__ = [
    "REWARDS",
    "AnswerScore",
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
    "policy_answer",
    "retrieval_has_answer",
    "score_answer",
    "score_trajectory",
    "substring_match",
    "substring_reward",
]
