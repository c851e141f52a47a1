"""A small thread-safe keep-alive pool of standard-library HTTP/1.1 connections.

Why not ``httpx``: ``http.client`` reads a ``content-length`` body with one buffered ``read``; ``httpx`` goes
through ``h11``'s Python event parser chunk by chunk, which makes receiving a large ``/retrieve`` answer
(hundreds of queries × 3 passages) several times slower, a noticeable share of the whole request (figures:
``docs/performance.md``, "Measurements behind code choices").

:class:`ConnectionPool` keeps up to ``max_connections`` idle connections to one ``http://`` or ``https://``
origin and lets at most that many requests run at once. A request that fails on a *reused* connection before
any answer arrived (the server closed the idle keep-alive connection, or restarted) is sent once more on a
fresh connection, as browsers and ``urllib3`` do; every other failure is the caller's to retry.
"""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

# what a reused keep-alive connection raises when the server closed it while it sat idle
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


@dataclass(frozen=True)
class HTTPAnswer:
    """One HTTP answer.

    Attributes:
        status: the status code.
        body: the whole body.
    """

    status: int
    body: bytes

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (undecodable bytes replaced), for error messages."""
        return self.body.decode("utf-8", errors="replace")


class PoolTimeout(TimeoutError):
    """Every connection of the pool stayed busy for the whole timeout."""


class ConnectionPool:
    """Keep-alive connections to one origin, shared by threads.

    Args:
        url: ``http://host:port[/prefix]`` or ``https://...``; request paths are appended to the prefix.
        timeout: seconds for each blocking socket read or write (as ``http.client``).
        max_connections: connections open at once (more concurrent requests wait up to ``timeout``).
        connect_timeout: seconds for opening a connection (None: ``timeout``). A server that does not accept a
            connection quickly is down or unreachable; one that accepted may still be searching a big batch.

    Raises:
        ValueError: the URL is not ``http(s)://host[:port][/prefix]``.
    """

    def __init__(
        self, url: str, timeout: float, max_connections: int = 16, connect_timeout: float | None = None
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"retrieval server URL must look like http://127.0.0.1:8000, got {url!r}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        self._https = parts.scheme == "https"
        self.host, self.port = parts.hostname, parts.port
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.connect_timeout = timeout if connect_timeout is None else connect_timeout
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_connections)

    def _new(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=self.connect_timeout)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> HTTPAnswer:
        """Send one request and read the whole answer.

        Raises:
            PoolTimeout: no connection became free within ``timeout``.
            TimeoutError: connecting, sending or reading took longer than ``timeout``.
            OSError, http.client.HTTPException: the connection failed (refused, reset, bad answer).
        """
        if not self._slots.acquire(timeout=self.timeout):
            raise PoolTimeout(f"all connections stayed busy for {self.timeout}s")
        try:
            with self._lock:
                conn, reused = (self._idle.pop(), True) if self._idle else (self._new(), False)
            try:
                answer, keep = self._exchange(conn, method, path, body, headers)
            except _STALE:
                conn.close()
                if not reused:
                    raise
                conn = self._new()  # the idle connection had been closed by the server: one fresh try
                answer, keep = self._exchange(conn, method, path, body, headers)
            if keep:
                with self._lock:
                    self._idle.append(conn)
            else:
                conn.close()
            return answer
        finally:
            self._slots.release()

    def _exchange(
        self,
        conn: http.client.HTTPConnection,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str] | None,
    ) -> tuple[HTTPAnswer, bool]:
        """``(answer, keep the connection)``; closes ``conn`` on any error other than a stale connection."""
        try:
            if conn.sock is None:  # connect within connect_timeout, then read and write within timeout
                conn.connect()
                conn.sock.settimeout(self.timeout)
            conn.request(method, self.prefix + path, body=body, headers=headers or {})
            resp = conn.getresponse()
            answer = HTTPAnswer(resp.status, resp.read())
            return answer, not resp.will_close
        except _STALE:
            raise
        except BaseException:
            conn.close()
            raise

    def close(self) -> None:
        """Close the idle connections (a request still running closes or returns its own)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
