"""QA answer scoring: SQuAD normalisation, exact match, substring match, token F1, answer extraction.

Follows Search-R1's ``verl/utils/reward_score/qa_em.py`` with one deliberate departure: the answer is
extracted from the model's *response* only (Search-R1 scans prompt + response and skips the first
``<answer>`` so as not to score the template's own example; scoring the response avoids that trap).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

Golden = str | Sequence[str]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = frozenset(string.punctuation)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


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


def extract_answer(response: str) -> str | None:
    """The stripped content of the last ``<answer>…</answer>`` in a model response, or None if there is none."""
    matches = _ANSWER.findall(response)
    return matches[-1].strip() if matches else None


def em_reward(response: str, golden_answers: Golden) -> float:
    """Search-R1's outcome reward: 1.0 if the extracted answer exactly matches a golden answer, else 0.0."""
    answer = extract_answer(response)
    return float(answer is not None and exact_match(answer, golden_answers))


def f1_reward(response: str, golden_answers: Golden) -> float:
    """Token F1 of the extracted answer (0.0 without an answer)."""
    answer = extract_answer(response)
    return 0.0 if answer is None else f1_score(answer, golden_answers)


def substring_reward(response: str, golden_answers: Golden) -> float:
    """1.0 if a golden answer is contained in the extracted answer, else 0.0."""
    answer = extract_answer(response)
    return float(answer is not None and substring_match(answer, golden_answers))
