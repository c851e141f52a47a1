"""Several retrieval servers behind one client: requests spread round-robin, failover, a circuit breaker each.

Search-R1's multi-node layout runs one retrieval server per node; a trainer should keep searching when one of
them dies or stalls. :class:`ReplicaSet` holds one keep-alive :class:`~searchr1.retrieval.pool.ConnectionPool`
per server URL and a :class:`CircuitBreaker` each:

- a request goes to the next replica (round-robin) whose breaker lets it through;
- a connection error, timeout or 5xx/429 answer counts a failure on that replica and the attempt moves on to the
  next one at once; the backoff sleep (``backoff * 2**round``) only comes after every replica has been tried;
- a timeout is not retried once every replica has been tried: a server that accepted the request and did not
  answer within the timeout would make each retry wait as long again (a hung, e.g. ``kill -STOP``-ped, server
  turned one search into ``(max_retries + 1) x timeout``) or would get the same batch twice (an overloaded one);
- ``failure_threshold`` failures in a row open the breaker: the replica gets no requests for ``cooldown_s``,
  then one trial request (half-open): a success closes it, a failure opens it again. When every breaker is open,
  the one that opened first is tried anyway (failing fast would turn a short outage of all replicas into
  failed searches).

``metrics()`` reports per replica ``replica<i>_up`` (1 closed, 0.5 half-open, 0 open), ``_requests``,
``_failures`` and ``_opened`` (times its breaker opened), and ``healthy_replicas``.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass

from searchr1.retrieval.pool import ConnectionPool, HTTPAnswer
from searchr1.retrieval.types import RetrievalError

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass
class CircuitBreaker:
    """Consecutive-failure breaker of one replica (not thread-safe: :class:`ReplicaSet` locks around it).

    Attributes:
        failure_threshold: failures in a row that open it.
        cooldown_s: seconds it stays open before one trial request.
        failures_in_row: current run of failures.
        opened_at: ``time.monotonic()`` when it last opened (None: closed).
        opened: times it opened.
    """

    failure_threshold: int = 2
    cooldown_s: float = 5.0
    failures_in_row: int = 0
    opened_at: float | None = None
    opened: int = 0

    def state(self, now: float) -> str:
        """``closed``, ``open`` or ``half_open`` (open, cooldown over: one trial allowed)."""
        if self.opened_at is None:
            return "closed"
        return "half_open" if now - self.opened_at >= self.cooldown_s else "open"

    def success(self) -> None:
        self.failures_in_row, self.opened_at = 0, None

    def failure(self, now: float) -> None:
        self.failures_in_row += 1
        half_open = self.opened_at is not None and now - self.opened_at >= self.cooldown_s
        if half_open or (self.opened_at is None and self.failures_in_row >= self.failure_threshold):
            self.opened_at, self.opened = now, self.opened + 1


class ReplicaSet:
    """Connection pools to several servers with round-robin, failover and circuit breakers (see module doc).

    Args:
        urls: server base URLs (at least one).
        timeout: seconds for each socket read/write.
        max_connections: keep-alive connections per replica.
        failure_threshold, cooldown_s: see :class:`CircuitBreaker`.
        connect_timeout: seconds for opening a connection (None: ``timeout``).
    """

    def __init__(
        self,
        urls: list[str],
        timeout: float,
        max_connections: int,
        failure_threshold: int = 2,
        cooldown_s: float = 5.0,
        connect_timeout: float | None = None,
    ) -> None:
        if not urls:
            raise ValueError("need at least one retrieval server URL")
        self.urls = [u.rstrip("/") for u in urls]
        self.timeout = timeout
        self.pools = [ConnectionPool(u, timeout, max_connections, connect_timeout) for u in self.urls]
        self.breakers = [CircuitBreaker(failure_threshold, cooldown_s) for _ in self.urls]
        self.requests = [0] * len(self.urls)
        self.failures = [0] * len(self.urls)
        self._next = 0
        self._lock = threading.Lock()

    def _pick(self, tried: set[int]) -> int:
        """The next replica to try: round-robin over the ones whose breaker passes and not yet tried this round."""
        with self._lock:
            now, n = time.monotonic(), len(self.urls)
            order = [(self._next + j) % n for j in range(n)]
            open_ok = [i for i in order if i not in tried and self.breakers[i].state(now) != "open"]
            if open_ok:
                choice = open_ok[0]
            else:  # every untried replica is open: the one open longest (or any, if all were tried)
                rest = [i for i in order if i not in tried] or order
                choice = min(rest, key=lambda i: self.breakers[i].opened_at or 0.0)
            self._next = (choice + 1) % n
            self.requests[choice] += 1
            return choice

    def _record(self, i: int, ok: bool) -> None:
        with self._lock:
            if ok:
                self.breakers[i].success()
            else:
                self.failures[i] += 1
                self.breakers[i].failure(time.monotonic())

    def request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str], max_retries: int, backoff: float
    ) -> tuple[HTTPAnswer, str]:
        """Send with failover; return the first non-retryable answer and the URL that gave it.

        Raises:
            RetrievalError: ``max_retries + 1`` attempts failed (the message names each replica's last error).
        """
        last: dict[str, str] = {}
        tried: set[int] = set()
        attempts = 0
        for attempt in range(max_retries + 1):
            if len(tried) == len(self.urls):  # a full round failed: back off, then start a new round
                time.sleep(backoff * 2 ** (attempt // len(self.urls) - 1))
                tried = set()
            i = self._pick(tried)
            tried.add(i)
            attempts += 1
            try:
                resp = self.pools[i].request(method, path, body, headers)
            except TimeoutError as err:
                last[self.urls[i]] = f"timed out after {self.timeout}s ({err or type(err).__name__})"
                self._record(i, ok=False)
                if len(tried) == len(self.urls):  # every replica had its chance: no retry (module docstring)
                    break
                continue
            except (OSError, http.client.HTTPException) as err:
                last[self.urls[i]] = f"cannot reach the server ({type(err).__name__}: {err})"
                self._record(i, ok=False)
                continue
            if resp.status in RETRY_STATUS:
                last[self.urls[i]] = f"HTTP {resp.status}: {resp.text[:300]}"
                self._record(i, ok=False)
                continue
            self._record(i, ok=True)
            return resp, self.urls[i]
        where = self.urls[0] if len(self.urls) == 1 else f"replicas {self.urls}"
        errors = "; ".join(f"{u}: {e}" for u, e in last.items()) if len(self.urls) > 1 else next(iter(last.values()))
        raise RetrievalError(
            f"retrieval server {where} failed after {attempts} attempt{'s' if attempts > 1 else ''}: {errors}. "
            "Is `searchr1-retrieval serve` running at that address?"
        )

    def metrics(self) -> dict[str, float]:
        """Per-replica health and counters (see module doc)."""
        up = {"closed": 1.0, "half_open": 0.5, "open": 0.0}
        out: dict[str, float] = {}
        with self._lock:
            now = time.monotonic()
            for i, br in enumerate(self.breakers):
                out[f"replica{i}_up"] = up[br.state(now)]
                out[f"replica{i}_requests"] = float(self.requests[i])
                out[f"replica{i}_failures"] = float(self.failures[i])
                out[f"replica{i}_opened"] = float(br.opened)
            out["healthy_replicas"] = float(sum(br.state(now) == "closed" for br in self.breakers))
        return out

    def close(self) -> None:
        for pool in self.pools:
            pool.close()
