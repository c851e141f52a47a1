"""QA answer scoring: SQuAD normalisation, exact match, substring match, token F1, and the scorer of a trajectory.

Follows Search-R1's ``verl/utils/reward_score/qa_em.py`` with one deliberate departure: the answer is the last
``<answer>`` of the text the policy *sampled* (``searchr1.protocols.answer_of_segments``). Search-R1 scans
prompt + response and skips the first match, so a trajectory that never answered is scored on the prompt's
``<answer> Beijing </answer>`` or on the invalid-action text's ``<answer> and </answer>``.

A reward's ``response`` is a :class:`~searchr1.rollout.Trajectory` (or anything with ``response_text`` and
``policy_texts``): the answer comes from its policy chunks, structure checks read its whole response. A plain
string is taken as text the policy wrote in full.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from searchr1.protocols import answer_of_segments, extract_answer

Golden = str | Sequence[str]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """SQuAD normalisation as in Search-R1: lowercase, drop ASCII punctuation, articles → space, collapse whitespace."""
    text = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _golds(golden_answers: Golden) -> list[str]:
    if isinstance(golden_answers, str):
        return [golden_answers]
    return [str(g) for g in golden_answers]


def exact_match(prediction: str, golden_answers: Golden) -> bool:
    """True when the normalised prediction equals any normalised golden answer."""
    pred = normalize_answer(prediction)
    return any(pred == normalize_answer(g) for g in _golds(golden_answers))


def substring_match(prediction: str, golden_answers: Golden) -> bool:
    """True when any normalised golden answer is a substring of the normalised prediction."""
    pred = normalize_answer(prediction)
    return any(normalize_answer(g) in pred for g in _golds(golden_answers))


def _token_f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    common = Counter(pred_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, golden_answers: Golden) -> float:
    """SQuAD token F1 between normalised prediction and answer, maximised over the golden answers."""
    pred_tokens = normalize_answer(prediction).split()
    return max((_token_f1(pred_tokens, normalize_answer(g).split()) for g in _golds(golden_answers)), default=0.0)


def policy_answer(response: Any) -> str | None:
    """The answer of a trajectory, read only from what the policy sampled (a string: its last ``<answer>``)."""
    if isinstance(response, str):
        return extract_answer(response)
    return answer_of_segments(response.policy_texts)


def response_text(response: Any) -> str:
    """The whole response text of a trajectory (observations and inserted texts included), or the string itself."""
    return response if isinstance(response, str) else response.response_text


@dataclass(frozen=True)
class AnswerScore:
    """The answer of one trajectory and its scores against the golden answers.

    Attributes:
        answer: the policy's last ``<answer>`` content, or None when it never answered.
        em: 1.0 on a normalised exact match with a golden answer, else 0.0.
        f1: best SQuAD token F1 over the golden answers (0.0 without an answer).
        substring: 1.0 when a normalised golden answer is inside the normalised answer, else 0.0.
    """

    answer: str | None
    em: float
    f1: float
    substring: float


def score_answer(answer: str | None, golden_answers: Golden) -> AnswerScore:
    """EM, F1 and substring match of an extracted answer (all 0.0 for None)."""
    if answer is None:
        return AnswerScore(None, 0.0, 0.0, 0.0)
    em = float(exact_match(answer, golden_answers))
    sub = float(substring_match(answer, golden_answers))
    return AnswerScore(answer, em, f1_score(answer, golden_answers), sub)


def score_trajectory(trajectory: Any, golden_answers: Golden) -> AnswerScore:
    """The one scorer of training metrics, validation and ``searchr1-eval``: policy-only answer, EM, F1, substring."""
    return score_answer(policy_answer(trajectory), golden_answers)


def em_reward(response: Any, golden_answers: Golden) -> float:
    """Search-R1's outcome reward: 1.0 if the policy's answer exactly matches a golden answer, else 0.0."""
    return score_trajectory(response, golden_answers).em


def f1_reward(response: Any, golden_answers: Golden) -> float:
    """Token F1 of the policy's answer (0.0 without an answer)."""
    return score_trajectory(response, golden_answers).f1


def substring_reward(response: Any, golden_answers: Golden) -> float:
    """1.0 if a golden answer is contained in the policy's answer, else 0.0."""
    return score_trajectory(response, golden_answers).substring
