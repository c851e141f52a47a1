"""Retrieval outages are loud in training: a probe before any model is loaded, agreed by every rank.

A trainer pointed at a dead retrieval server used to train on ``Search failed`` observations and exit 0. Now
:func:`check_retriever` (called from ``SearchR1Module.setup`` on every rank) runs the retriever's ``probe()`` when
it has one (:meth:`~searchr1.retrieval.HTTPRetriever.probe`: one real search per server) and the ranks agree
(``strategy.reduce_boolean_decision``, one all-reduce on every rank whatever its own outcome) before any of them
raises, so no rank is left waiting in a collective. During the run, the share of failed searches is the metric
``rollout/search_failure_rate``, watched by ``CollapseGuard``'s ``search_failures`` rule (docs/collapse.md).
"""

from __future__ import annotations

from typing import Any

from searchr1.retrieval import RetrievalError
from searchr1.training.scaling import SetupError


class RetrieverUnreachable(SetupError):
    """The retriever's probe failed on some rank before training started."""


def probe_error(retriever: Any) -> str | None:
    """The message of ``retriever.probe()``'s failure, or None (it answered, or it has nothing to probe)."""
    probe = getattr(retriever, "probe", None)
    if not callable(probe):
        return None
    try:
        probe()
    except RetrievalError as err:
        return str(err)
    return None


def check_retriever(retriever: Any, strategy: Any) -> None:
    """Probe ``retriever`` on this rank, agree over ranks, and raise on every rank when any probe failed.

    Args:
        retriever: the module's retriever (any object; only one with a ``probe()`` method is checked).
        strategy: the Lightning strategy (``reduce_boolean_decision`` is a no-op on one process).

    Raises:
        RetrieverUnreachable: this rank's probe message, or a line saying another rank's failed.
    """
    error = probe_error(retriever)
    if strategy.reduce_boolean_decision(error is None, all=True):
        return
    raise RetrieverUnreachable(
        error or "the retrieval server did not answer the probe of another rank (its message names the URL)"
    )
