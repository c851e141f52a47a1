"""Reliability tooling: a fault-injecting retrieval server (real process), rollout hooks, ``/proc`` helpers.

Used by ``tests/reliability`` and ``benchmarks/load.py``; see ``docs/reliability.md``.
"""

from searchr1.testing.faults import FAULT_MODES, FaultInjector, FaultPlan, FaultyServerProcess, RankURLRetriever
from searchr1.testing.procs import listening_addresses, rss_bytes, wait_for
from searchr1.testing.rollout import HookedBackend, search_then_answer_script

__all__ = [
    "FAULT_MODES",
    "FaultInjector",
    "FaultPlan",
    "FaultyServerProcess",
    "HookedBackend",
    "RankURLRetriever",
    "listening_addresses",
    "rss_bytes",
    "search_then_answer_script",
    "wait_for",
]
