"""Retrievers that search nothing: :class:`EmptyRetriever` (every search returns no passage) and
:class:`NoRetriever` (a search is an error: for runs that must never search)."""

from __future__ import annotations

from searchr1.retrieval.types import Passage


class EmptyRetriever:
    """A retriever whose every search returns nothing (observation body ``""``): the no-search ablation, where the
    policy still calls ``<search>`` but every ``<information>`` block is empty."""

    def search(self, queries: list[str], topk: int) -> list[list[Passage]]:
        """One empty result list per query."""
        return [[] for _ in queries]


class NoRetriever:
    """The retriever of runs that never search (``max_turns=0``, evaluation methods without search): a call is a bug.

    Args:
        reason: what the error says about who should not have searched.
    """

    def __init__(self, reason: str = "a method without search tried to search; this is a bug in the evaluator") -> None:
        self.reason = reason

    def search(self, queries: list[str], topk: int) -> list[list[Passage]]:
        """Always raises ``RuntimeError`` naming the queries."""
        raise RuntimeError(f"{self.reason} (queries {queries!r})")
