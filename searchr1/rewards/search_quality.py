"""Search-behaviour metrics of a trajectory and the failure class of a wrong answer (pure functions over texts).

Reward says *whether* the policy answered right; these say *how* it searched and *why* it failed:

* ``answer_in_retrieved``: some retrieved passage holds a golden answer, both normalised as EM normalises
  (:func:`~searchr1.rewards.normalize_answer`; substring of the normalised block);
* ``gold_recall``: per search call, the share of the question's gold titles (HotpotQA supporting facts, the
  synthetic task's person: :func:`gold_titles`) among the passages shown, averaged over the calls;
* ``redundant_searches``: queries that repeat an earlier query of the same trajectory, exactly or nearly
  (word Jaccard ≥ ``near``);
* query length (words), policy tokens per turn, ``<think>`` length (words) and a repetition score of the
  policy's own text (share of repeated word trigrams: 0 for fresh text, near 1 for a loop — degeneration);
* the **outcome** of each trajectory: ``correct`` (EM), else the failure class: ``never_searched`` (no search, no
  prompt context), ``not_retrieved`` (searched, but no passage shown held an answer) or ``misread`` (an answer was
  retrieved and the policy still answered wrong). The four shares sum to 1 over any set of trajectories.

The retrieved texts are the protocol's observation blocks of the response (what the policy was shown; a clipped
observation counts as far as it was shown), minus blocks the policy wrote itself.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from searchr1.protocols import get_protocol
from searchr1.rewards.qa import Golden, _golds, normalize_answer

OUTCOMES = ("correct", "never_searched", "not_retrieved", "misread")
"""Every trajectory falls in exactly one: EM, or one of the three failure classes."""

_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.DOTALL)
_DOC_TITLE = re.compile(r"^Doc \d+\(Title: (.*?)\) ", re.MULTILINE)


def gold_titles(metadata: Mapping[str, Any]) -> list[str]:
    """The titles a perfect search finds for a question, from its metadata (empty when the data has none).

    Read, in order: ``gold_titles``; ``supporting_titles`` (our HotpotQA sample); HotpotQA's ``supporting_facts``
    (``[[title, sentence], ...]`` or ``{"title": [...], ...}``); the synthetic task's ``entity`` (the person).
    """
    for key in ("gold_titles", "supporting_titles"):
        if metadata.get(key):
            return list(dict.fromkeys(str(t) for t in metadata[key]))
    facts = metadata.get("supporting_facts")
    if isinstance(facts, Mapping) and facts.get("title"):
        return list(dict.fromkeys(str(t) for t in facts["title"]))
    if isinstance(facts, Sequence) and not isinstance(facts, str) and facts:
        return list(dict.fromkeys(str(f[0]) for f in facts))
    if metadata.get("entity"):
        return [str(metadata["entity"])]
    return []


def retrieved_blocks(response_text: str, policy_texts: Sequence[str] = (), protocol: str = "search_r1") -> list[str]:
    """The observation blocks of a response (in order), without blocks that appear in the policy's own text."""
    proto = get_protocol(protocol)
    own = Counter(b for text in policy_texts for b in proto.observation_blocks(text))
    out = []
    for block in proto.observation_blocks(response_text):
        if own[block] > 0:
            own[block] -= 1
        else:
            out.append(block)
    return out


def answer_in_retrieved(blocks: Iterable[str], golden_answers: Golden) -> bool:
    """True when a normalised golden answer is a substring of some normalised block."""
    golds = [normalize_answer(g) for g in _golds(golden_answers)]
    return any(g and g in normalize_answer(b) for b in blocks for g in golds)


def block_titles(block: str) -> list[str]:
    """The passage titles of one observation body (``Doc i(Title: <title>) <text>``; surrounding quotes dropped)."""
    titles = []
    for title in _DOC_TITLE.findall(block):
        if len(title) >= 2 and title[0] == '"' and title[-1] == '"':
            title = title[1:-1]
        titles.append(title)
    return titles


def title_recall(block: str, golds: Sequence[str]) -> float:
    """Share of the gold titles shown as a passage title in one observation body.

    A title counts when ``(Title: <gold>)`` or ``(Title: "<gold>")`` appears (exact, case-sensitive).
    """
    if not golds:
        raise ValueError("title_recall needs at least one gold title")
    found = sum(f"(Title: {t}) " in block or f'(Title: "{t}") ' in block for t in golds)
    return found / len(golds)


def _words(text: str) -> list[str]:
    return normalize_answer(text).split()


def redundant_searches(queries: Sequence[str], near: float = 0.8) -> int:
    """Queries that repeat an earlier query of the same trajectory.

    A query is redundant when its normalised words equal an earlier query's, or their Jaccard similarity (distinct
    words) is at least ``near``.
    """
    seen: list[set[str]] = []
    count = 0
    for q in queries:
        words = set(_words(q))
        if any(words == s or (words | s and len(words & s) / len(words | s) >= near) for s in seen):
            count += 1
        seen.append(words)
    return count


def think_texts(policy_texts: Sequence[str]) -> list[str]:
    """Contents of every ``<think>`` block the policy wrote (an unclosed one runs to the end of its turn)."""
    return [m for text in policy_texts for m in _THINK.findall(text)]


def repetition_score(text: str, n: int = 3) -> float:
    """Share of repeated word ``n``-grams: ``1 - distinct / total`` (0.0 with fewer than ``n`` words)."""
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def outcome(correct: bool, searched: bool, retrieved: bool) -> str:
    """The outcome class (see :data:`OUTCOMES`): ``correct`` first, then why a wrong answer failed."""
    if correct:
        return "correct"
    if not searched:
        return "never_searched"
    return "misread" if retrieved else "not_retrieved"


@dataclass(frozen=True)
class SearchQuality:
    """Search behaviour of one trajectory.

    Attributes:
        outcome: one of :data:`OUTCOMES`.
        answer_in_retrieved: some retrieved passage (or prompt context) holds a golden answer.
        searches: searches executed.
        gold_recall: mean over search calls of :func:`title_recall`; None without gold titles or searches.
        redundant_searches: :func:`redundant_searches` of the queries.
        query_words: mean words per query; None without searches.
        think_words: words inside the policy's ``<think>`` blocks.
        repetition: :func:`repetition_score` of all the policy's text.
        tokens_per_turn: sampled (loss-mask) tokens per generation turn.
    """

    outcome: str
    answer_in_retrieved: bool
    searches: int
    gold_recall: float | None
    redundant_searches: int
    query_words: float | None
    think_words: int
    repetition: float
    tokens_per_turn: float


def assess(
    trajectory: Any,
    golden_answers: Golden,
    correct: bool,
    golds: Sequence[str] = (),
    protocol: str = "search_r1",
    context: Sequence[str] = (),
) -> SearchQuality:
    """The :class:`SearchQuality` of a trajectory.

    Args:
        trajectory: a :class:`~searchr1.rollout.Trajectory` (``response_text``, ``policy_texts``, ``queries``,
            ``num_searches``, ``num_turns``, ``loss_mask``).
        golden_answers: the accepted answers.
        correct: the trajectory's EM.
        golds: the question's gold titles (:func:`gold_titles`).
        protocol: the text protocol (where the observation blocks are).
        context: passage texts put in the prompt (the ``rag`` baseline); they count as retrieved.
    """
    blocks = retrieved_blocks(trajectory.response_text, trajectory.policy_texts, protocol)
    retrieved = answer_in_retrieved([*blocks, *context], golden_answers)
    searched = trajectory.num_searches > 0 or bool(context)
    recalls = [title_recall(b, golds) for b in blocks] if golds else []
    queries = list(trajectory.queries)
    own_text = " ".join(trajectory.policy_texts)
    return SearchQuality(
        outcome=outcome(correct, searched, retrieved),
        answer_in_retrieved=retrieved,
        searches=trajectory.num_searches,
        gold_recall=sum(recalls) / len(recalls) if recalls else None,
        redundant_searches=redundant_searches(queries),
        query_words=sum(len(q.split()) for q in queries) / len(queries) if queries else None,
        think_words=sum(len(t.split()) for t in think_texts(trajectory.policy_texts)),
        repetition=repetition_score(own_text),
        tokens_per_turn=sum(trajectory.loss_mask) / max(trajectory.num_turns, 1),
    )


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def summarize(qualities: Sequence[SearchQuality]) -> dict[str, float]:
    """Means over trajectories: ``answer_in_retrieved``, ``failure_<class>`` shares (with ``em``: sum 1),
    ``gold_recall`` (over trajectories that searched with gold titles), ``redundant_searches``, searches of correct
    and wrong trajectories, ``query_words``, ``think_words``, ``repetition``, ``tokens_per_turn``. NaN where no
    trajectory has the value.
    """
    if not qualities:
        raise ValueError("summarize needs at least one trajectory")
    n = len(qualities)
    outcomes = Counter(q.outcome for q in qualities)
    right = [q.searches for q in qualities if q.outcome == "correct"]
    wrong = [q.searches for q in qualities if q.outcome != "correct"]
    out = {
        "answer_in_retrieved": sum(q.answer_in_retrieved for q in qualities) / n,
        **{f"failure_{name}": outcomes.get(name, 0) / n for name in OUTCOMES[1:]},
        "gold_recall": _mean([q.gold_recall for q in qualities if q.gold_recall is not None]),
        "redundant_searches": _mean([q.redundant_searches for q in qualities]),
        "searches_correct": _mean(right),
        "searches_wrong": _mean(wrong),
        "query_words": _mean([q.query_words for q in qualities if q.query_words is not None]),
        "think_words": _mean([q.think_words for q in qualities]),
        "repetition": _mean([q.repetition for q in qualities]),
        "tokens_per_turn": _mean([q.tokens_per_turn for q in qualities]),
    }
    return out
