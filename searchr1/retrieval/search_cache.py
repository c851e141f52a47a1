"""The budget of a paid search engine on disk: a results cache and a spend ledger in one SQLite file.

``results`` maps ``(engine, normalised query, k)`` to the passages the engine's answer was mapped to, so a query
asked again (by another sample of the GRPO group, a later step, another run or a resumed one) costs nothing.
``spend`` has one row per request sent to a paid engine (its engine, query, k, price and state), grouped by a
``scope`` name: the ``max_cost`` of a scope holds across every process that writes to the file (ranks of one run,
resumes, runs that share the scope), because a request is *reserved* in the ledger inside one ``BEGIN IMMEDIATE``
transaction (SQLite's file lock serialises processes) before it is sent, and removed again if the engine did not
bill it (an error or a 429 answer). A process killed mid-request leaves its reservation counted: the ledger errs
on the side of spending less.

Two processes that miss the same query at the same moment both send it (the second write replaces the first);
that costs one extra request at most per such race and keeps the cache free of cross-process waits.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import orjson

from searchr1.retrieval.types import Passage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    engine TEXT NOT NULL, query TEXT NOT NULL, k INTEGER NOT NULL, passages BLOB NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (engine, query, k));
CREATE TABLE IF NOT EXISTS spend (
    id INTEGER PRIMARY KEY AUTOINCREMENT, scope TEXT NOT NULL, engine TEXT NOT NULL, query TEXT NOT NULL,
    k INTEGER NOT NULL, cost REAL NOT NULL, state TEXT NOT NULL, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS spend_scope ON spend (scope);
"""


def normalise_query(query: str) -> str:
    """The cache key of a query: Unicode NFKC, case-folded, whitespace runs collapsed to one space, trimmed.

    Web engines ignore case and spacing, so ``"Who  wrote Hamlet"`` and ``"who wrote hamlet "`` share a result.
    """
    return " ".join(unicodedata.normalize("NFKC", query).casefold().split())


class BudgetExhausted(Exception):
    """Sending one more request would take a scope's spend past its ``max_cost``; nothing was sent.

    Deliberately not a :class:`~searchr1.retrieval.types.RetrievalError`: the rollout engine shows those to the
    policy as a failed search and trains on; this one ends the step (see ``searchr1.training.search_cost``).

    Attributes:
        checkpoint: set by the training callback to the checkpoint it saved before the run stopped.
    """

    checkpoint: str | None = None


@dataclass(frozen=True)
class ScopeSpend:
    """What a scope's ledger holds: ``requests`` billed or in flight and their total ``cost``."""

    requests: int
    cost: float


def _encode(passages: list[Passage]) -> bytes:
    return orjson.dumps([[p.id, p.contents, p.score] for p in passages])


def _decode(blob: bytes) -> list[Passage]:
    return [Passage.from_contents(i, contents, score) for i, contents, score in orjson.loads(blob)]


class SearchCache:
    """Results cache and spend ledger in ``<cache_dir>/search.sqlite`` (created on first use).

    Safe across threads (one connection per process behind a lock) and processes (SQLite locking, WAL journal).

    Args:
        cache_dir: folder of the SQLite file (``~`` is expanded).
        busy_timeout_s: how long a writer waits for another process's lock before failing.
    """

    def __init__(self, cache_dir: str | Path, busy_timeout_s: float = 60.0) -> None:
        self.path = Path(cache_dir).expanduser() / "search.sqlite"
        self.busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1

    def _db(self) -> sqlite3.Connection:
        """This process's connection (a forked child opens its own)."""
        if self._conn is None or self._pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def get(self, engine: str, query: str, k: int) -> list[Passage] | None:
        """The cached passages of ``query`` (normalised here) at ``k``, or None."""
        with self._lock:
            row = (
                self._db()
                .execute("SELECT passages FROM results WHERE engine=? AND query=? AND k=?", (engine, query, k))
                .fetchone()
            )
        return None if row is None else _decode(row[0])

    def put(self, engine: str, query: str, k: int, passages: list[Passage]) -> None:
        """Store (or replace) the passages of ``query`` at ``k``."""
        with self._lock:
            self._db().execute(
                "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?)",
                (engine, query, k, _encode(passages), time.time()),
            )

    def spent(self, scope: str) -> ScopeSpend:
        """Requests and cost recorded under ``scope`` (billed ones and those in flight)."""
        with self._lock:
            query = "SELECT COUNT(*), COALESCE(SUM(cost), 0) FROM spend WHERE scope=?"
            n, cost = self._db().execute(query, (scope,)).fetchone()
        return ScopeSpend(int(n), float(cost))

    def reserve(self, scope: str, engine: str, query: str, k: int, price: float, max_cost: float | None) -> int:
        """Record one request of ``price`` under ``scope`` before it is sent; returns its ledger row.

        Raises:
            BudgetExhausted: the scope's spend plus ``price`` would exceed ``max_cost`` (nothing is recorded).
        """
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")  # one writer across processes from the check to the insert
            try:
                (spent,) = db.execute("SELECT COALESCE(SUM(cost), 0) FROM spend WHERE scope=?", (scope,)).fetchone()
                if max_cost is not None and spent + price > max_cost + 1e-12:
                    raise BudgetExhausted(
                        f"search budget exhausted: scope {scope!r} has spent {spent:.4f} of max_cost {max_cost:.4f}; "
                        f"one more {engine} request ({price:.4f}) would exceed it. Raise max_cost (or use a new "
                        f"budget_scope) to go on; cached queries stay free"
                    )
                cur = db.execute(
                    "INSERT INTO spend (scope, engine, query, k, cost, state, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (scope, engine, query, k, price, "sent", time.time()),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return int(cur.lastrowid)

    def settle(self, row: int, billed: bool) -> None:
        """Mark a reserved request ``billed`` (answered), or drop it from the ledger (not billed: error, 429)."""
        with self._lock:
            if billed:
                self._db().execute("UPDATE spend SET state='billed' WHERE id=?", (row,))
            else:
                self._db().execute("DELETE FROM spend WHERE id=?", (row,))

    def close(self) -> None:
        """Close this process's connection."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
