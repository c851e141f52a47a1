"""Format-aware EM reward, after Search-R1's v0.3 ``qa_em_format.compute_score_em`` (registered as ``em_format``
and ``qa_em_format``).

A response has a *valid structure* when, outside tags, it holds only whitespace and its tags follow
``<think>…</think>`` then either ``<search>…</search><information>…</information>`` and another think
(repeatable) or ``<answer>…</answer>`` to finish. Scores (all parameters):

- exact answer and valid structure → ``score``; exact answer, invalid structure → ``score − structure_format_score``;
- wrong/missing answer, valid structure → ``structure_format_score`` (+ ``retrieval_score`` when a golden
  answer appears in some ``<information>`` block);
- wrong answer, invalid structure → ``final_format_score``; no answer, invalid structure → 0.

The structure and the retrieval hit are read from the whole response (observations included); the answer only from
what the policy sampled. Departures from Search-R1: the structure is checked on the response itself (Search-R1
checks the text after the first ``<|im_start|>assistant`` of the decoded prompt + response, so without a Qwen chat
template no response is ever valid), and the answer is the policy's (Search-R1's ``extract_solution`` reads the
prompt's ``<answer> Beijing </answer>`` for a trajectory that never answered, which then earns
``final_format_score`` or ``structure_format_score`` as a "wrong answer" where we give 0 or the structure score).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from searchr1.protocols import information_blocks
from searchr1.rewards.qa import Golden, _golds, exact_match, normalize_answer, policy_answer, response_text

_TAG = re.compile(r"</?(think|search|information|answer)>")
# state -> {tag: next state}
_TRANSITIONS: dict[str, dict[str, str]] = {
    "start": {"<think>": "in_think"},
    "in_think": {"</think>": "after_think"},
    "after_think": {"<search>": "in_search", "<answer>": "in_answer"},
    "in_search": {"</search>": "after_search"},
    "after_search": {"<information>": "in_information"},
    "in_information": {"</information>": "after_information"},
    "after_information": {"<think>": "in_think"},
    "in_answer": {"</answer>": "end"},
}
_INSIDE = {"in_think", "in_search", "in_information", "in_answer"}


def is_valid_structure(response: str) -> bool:
    """True when the response follows the think → (search → information → think)* → answer structure."""
    state, pos = "start", 0
    for match in _TAG.finditer(response):
        if state not in _INSIDE and response[pos : match.start()].strip():
            return False
        state = _TRANSITIONS.get(state, {}).get(match.group(0), "")
        if not state:
            return False
        pos = match.end()
    return state == "end" and not response[pos:].strip()


def retrieval_has_answer(response: str, golden_answers: Golden) -> bool:
    """True when some normalised golden answer is a substring of some normalised information block."""
    blocks = [normalize_answer(b) for b in information_blocks(response)]
    return any(normalize_answer(g) in b for g in _golds(golden_answers) for b in blocks)


@dataclass
class EMFormatReward:
    """Search-R1's format-aware EM reward (``qa_em_format.compute_score_em``) with its scores as parameters.

    Args:
        score: reward for a correct answer in a valid structure.
        structure_format_score: reward for a valid structure (and the penalty on a correct answer without it).
        final_format_score: reward for an extractable but wrong answer in an invalid structure.
        retrieval_score: bonus when the retrieved information contains a golden answer (valid structure only).
    """

    score: float = 1.0
    structure_format_score: float = 0.2
    final_format_score: float = 0.1
    retrieval_score: float = 0.1

    def __call__(self, response: Any, golden_answers: Golden) -> float:
        text = response_text(response)
        valid = is_valid_structure(text)
        answer = policy_answer(response)
        if answer is not None and exact_match(answer, golden_answers):
            return self.score if valid else self.score - self.structure_format_score
        if valid:
            bonus = self.retrieval_score if retrieval_has_answer(text, golden_answers) else 0.0
            return self.structure_format_score + bonus
        return 0.0 if answer is None else self.final_format_score
