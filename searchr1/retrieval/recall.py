"""Recall of supporting titles: the share of a question's gold passages' titles found in its top ``k``."""

from __future__ import annotations

from collections.abc import Sequence

from searchr1.retrieval.types import Passage


def title_recall(results: Sequence[Sequence[Passage]], gold: Sequence[Sequence[str]], ks: Sequence[int]) -> dict:
    """``{k: found / total}`` over all questions: a gold title counts once if any of the top ``k`` has it.

    Args:
        results: per question, passages best first (at least ``max(ks)`` of them for a fair figure).
        gold: per question, its supporting titles.
        ks: cut-offs.
    """
    total = sum(len(g) for g in gold)
    return {k: sum(titles_found(results, gold, k)) / max(total, 1) for k in ks}


def titles_found(results: Sequence[Sequence[Passage]], gold: Sequence[Sequence[str]], k: int) -> list[int]:
    """Per question, how many of its gold titles one of its top ``k`` passages has."""
    return [sum(t in {p.title for p in r[:k]} for t in g) for r, g in zip(results, gold)]
