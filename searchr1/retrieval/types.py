"""Core retrieval types shared by every retriever, the server and the rollout engine.

``Passage`` is one retrieved document; ``Retriever`` is the protocol every search backend implements
(one batched call per step); ``format_passages`` renders passages exactly as Search-R1's observation
body so that a policy trained here sees the same text as one trained with the Search-R1 repo.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Passage:
    """One retrieved passage.

    Attributes:
        id: corpus id of the passage (string, as in the wiki-18 JSONL).
        title: first line of ``contents`` with optional surrounding double quotes removed.
        text: the rest of ``contents`` after the title line.
        score: retriever score (higher is better); 0.0 when the backend did not return one.
        raw_contents: the corpus ``contents`` string as stored (title line verbatim, quotes kept), or
            None for passages built by hand; ``format_passages`` uses its first line as Search-R1 does.
    """

    id: str
    title: str
    text: str
    score: float = 0.0
    raw_contents: str | None = None

    @property
    def contents(self) -> str:
        """The wiki-18 ``contents`` field (the stored one when known, else ``"title"\ntext``)."""
        if self.raw_contents is not None:
            return self.raw_contents
        return f'"{self.title}"\n{self.text}'

    @property
    def title_line(self) -> str:
        """The title as Search-R1 shows it: the verbatim first line of ``contents`` (quotes kept)."""
        if self.raw_contents is not None:
            return self.raw_contents.partition("\n")[0]
        return self.title

    @classmethod
    def from_contents(cls, id: str, contents: str, score: float = 0.0) -> Passage:
        """Split a wiki-18 ``contents`` string (``"Title"\\ntext``; quotes optional) into a passage."""
        title, _, text = contents.partition("\n")
        title = title.strip()
        if len(title) >= 2 and title[0] == '"' and title[-1] == '"':
            title = title[1:-1]
        # Filling __dict__ directly skips the frozen dataclass's five object.__setattr__ calls, most of the cost of
        # building a passage (thousands per batch on both the in-process and the client path). Same object.
        p = object.__new__(cls)
        p.__dict__.update(id=str(id), title=title, text=text, score=float(score), raw_contents=contents)
        return p


@dataclass(frozen=True)
class Hits:
    """One query's result as rows of a passage store, before any passage is read.

    Store-backed retrievers (BM25, dense) produce these; the server turns them into its JSON answer from
    the stored lines without building :class:`Passage` objects, the in-process path reads the passages.

    Attributes:
        rows: ``(k,)`` passage-store rows, best first.
        scores: ``(k,)`` their scores (finite floats).
    """

    rows: list[int]
    scores: list[float]


@runtime_checkable
class Retriever(Protocol):
    """A search backend: one batched call returns ``topk`` passages for every query."""

    def search(self, queries: list[str], topk: int) -> list[list[Passage]]:
        """Return, for each query in order, up to ``topk`` passages, best first."""
        ...


def format_passages(passages: Sequence[Passage]) -> str:
    """Render passages as Search-R1's observation body.

    Search-R1 (``search_r1/llm_agent/generation.py::_passages2string``) writes, for the i-th
    passage (1-based), ``Doc i(Title: <title>) <text>\\n`` where title is the first line of
    ``contents`` and text the remaining lines.

    Args:
        passages: passages of one query, best first.

    Returns:
        The concatenated string (empty for no passages).
    """
    return "".join(f"Doc {i}(Title: {p.title_line}) {p.text}\n" for i, p in enumerate(passages, start=1))


class RetrievalError(RuntimeError):
    """A search request failed for good (server down, timeouts after every retry, bad reply).

    The rollout engine catches it and shows ``Search failed: <message>`` to the policy instead of
    crashing the training step.
    """
