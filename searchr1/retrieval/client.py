"""HTTP client for ``searchr1-retrieval serve`` or any of Search-R1's servers (BM25, dense e5, rerank, online search).

A :class:`~searchr1.retrieval.pool.ConnectionPool` of standard-library ``http.client`` connections keeps them
alive between calls (cheaper than ``httpx`` at receiving large answers: see :mod:`~searchr1.retrieval.pool`). A call
is retried on connection errors, timeouts and 5xx/429 answers, ``max_retries`` times with exponential backoff
(``backoff * 2**attempt`` seconds); then :class:`~searchr1.retrieval.types.RetrievalError` says what failed. A
4xx other than 429 is the caller's mistake and raises at once with the server's message. Given several server
URLs (one server per node), requests are spread over them and fail over from a dead or slow one, each behind a
circuit breaker (:mod:`~searchr1.retrieval.replicas`); ``metrics()`` then reports each replica's health.

Outages are loud: :meth:`HTTPRetriever.probe` sends one real search to every replica (``searchr1 fit`` calls it
before loading any model and refuses to start when no server answers), a connection must open within
``connect_timeout`` (a down or unreachable host fails in seconds, not after the read timeout), a request that
timed out is not sent to the same server again (a hung server costs one ``timeout`` per call, not
``max_retries + 1`` of them), and the first failed call after a success, and the first success after failures,
are logged as warnings (logger ``searchr1.retrieval``) besides being shown to the policy as ``Search failed``.

Large batches are split into requests of at most ``max_queries_per_request`` queries, all sent at once on their
own connections (up to ``max_connections``). Our server searches a batch in parts of whole requests
(``--part-queries``, the same 256 by default) and answers each part when it is done, so it searches the next part
while this process receives and parses the previous one: splitting overlaps the two (measured in
``docs/performance.md``, "Measurements behind code choices"). Bodies are encoded and parsed with ``orjson``
(falling back to ``json`` for what ``orjson`` refuses, e.g. a Search-R1 server's ``\\ud800`` escapes), which is
several times faster than ``json``.
"""

from __future__ import annotations

import http.client
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from searchr1.retrieval.base import CachedRetriever
from searchr1.retrieval.corpus import loads
from searchr1.retrieval.pool import HTTPAnswer
from searchr1.retrieval.replicas import ReplicaSet
from searchr1.retrieval.search_cache import BudgetExhausted
from searchr1.retrieval.types import Passage, RetrievalError

_JSON_HEADERS = {"content-type": "application/json"}
PROBE_QUERY = "searchr1 retrieval probe"
"""The query :meth:`HTTPRetriever.probe` searches (any answer in the wire format will do)."""
logger = logging.getLogger("searchr1.retrieval")


def dumps(payload: Any) -> bytes:
    """``payload`` as compact UTF-8 JSON (``json.dumps(..., separators=(",", ":"))`` semantics:
    a lone surrogate raises ``UnicodeEncodeError``)."""
    try:
        return orjson.dumps(payload)
    except orjson.JSONEncodeError:
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _document_passage(item: Any) -> Passage:
    """One result item of any Search-R1 server as a passage.

    Shapes (Search-R1 a14dc3a ``search_r1/search/``): ``{"document": doc, "score": s}`` (``return_scores``) or the
    bare ``doc``; ``doc`` is ``{"id", "contents"}`` (dense e5 / BM25 over a corpus file: the corpus row),
    ``{"title", "text", "contents"}`` without an id (BM25 with stored docs), ``{"contents"}`` only (online search),
    or a ``'"title"\ntext'`` string (rerank server). A missing id is ``""``; a missing score 0.0.
    """
    doc, score = item, 0.0
    if isinstance(item, dict) and "document" in item:
        doc, score = item["document"], item.get("score")
        score = 0.0 if score is None else score
    if isinstance(doc, str):
        return Passage.from_contents("", doc, score)
    if not isinstance(doc, dict):
        raise TypeError(f"a result item must be an object or a string, got {type(doc).__name__}")
    contents = doc.get("contents")
    if contents is None:
        contents = doc.get("content")
    if contents is None:
        if "title" not in doc and "text" not in doc:
            raise KeyError("a document needs 'contents' (or 'title'/'text')")
        contents = f'"{doc.get("title", "")}"\n{doc.get("text", "")}'
    doc_id = doc.get("id", doc.get("docid", ""))
    return Passage.from_contents("" if doc_id is None else str(doc_id), str(contents), score)


def parse_result(body: Any, n: int) -> list[list[Passage]]:
    """Passages of a parsed ``/retrieve`` answer for ``n`` queries, in any shape Search-R1's servers answer.

    Our server's ``{"document": {"id", "contents"}, "score"}`` items take the fast path; every other shape
    (see :func:`_document_passage`) is read item by item.

    Raises:
        KeyError, TypeError, ValueError: the answer does not have the wire format.
    """
    result = body["result"]
    if len(result) != n:
        raise ValueError(f"{len(result)} result lists for {n} queries")
    make = Passage.from_contents
    out = []
    for r in result:
        row = []
        for d in r:
            try:
                doc = d["document"]
                row.append(make(doc["id"], doc["contents"], d.get("score", 0.0)))
            except (KeyError, TypeError):
                row.append(_document_passage(d))
        out.append(row)
    return out


class HTTPRetriever(CachedRetriever):
    """Search through a retrieval server.

    Args:
        url: server base URL (``/retrieve`` is appended), or a list of them (replicas of the same index: requests
            are spread round-robin and fail over, see :mod:`~searchr1.retrieval.replicas`).
        timeout: seconds for each socket read/write of a request (the server searching a batch); a request that
            timed out is not retried on the same server.
        max_retries: extra attempts after the first failed one.
        backoff: first retry delay in seconds, doubled each retry.
        max_queries_per_request: split bigger batches into requests of this many queries, sent concurrently
            (keep it at the server's ``--part-queries`` so they are searched one after the other while the
            answers come back; the server refuses more than its ``--max-queries``, 16,384 by default).
        max_connections: size of the keep-alive pool (requests running at once), per replica.
        failure_threshold: failures in a row that open a replica's circuit breaker.
        cooldown_s: seconds an open replica gets no requests before one trial.
        dedup, cache_size: see :class:`~searchr1.retrieval.base.CachedRetriever`.
        connect_timeout: seconds for opening a connection (at most ``timeout``).
    """

    def __init__(
        self,
        url: str | list[str] = "http://127.0.0.1:8000",
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_queries_per_request: int = 256,
        max_connections: int = 16,
        failure_threshold: int = 2,
        cooldown_s: float = 5.0,
        dedup: bool = True,
        cache_size: int = 0,
        connect_timeout: float = 5.0,
    ) -> None:
        super().__init__(dedup=dedup, cache_size=cache_size)
        if max_retries < 0 or backoff < 0 or min(timeout, connect_timeout) <= 0 or max_queries_per_request < 1:
            raise ValueError(
                "need timeout > 0, connect_timeout > 0, max_retries >= 0, backoff >= 0 and max_queries_per_request >= 1"
            )
        self.urls = [u.rstrip("/") for u in ([url] if isinstance(url, str) else url)]
        self.url = self.urls[0]
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_queries_per_request = max_queries_per_request
        self.max_connections = max_connections
        self.connect_timeout = min(connect_timeout, timeout)
        self._replicas = ReplicaSet(
            self.urls, timeout, max_connections, failure_threshold, cooldown_s, self.connect_timeout
        )
        self._senders: ThreadPoolExecutor | None = None  # started on the first batch that needs several requests
        self._failing = False  # the last call failed (logged once per outage)

    def search(self, queries: list[str], topk: int) -> list[list[Passage]]:
        """See :meth:`~searchr1.retrieval.base.CachedRetriever.search`; an outage's first failure and the recovery
        are logged (warning level, logger ``searchr1.retrieval``)."""
        try:
            results = super().search(queries, topk)
        except RetrievalError as err:
            if not self._failing:
                logger.warning("searchr1: search failed: %s (logged once until the server answers again)", err)
            self._failing = True
            raise
        if self._failing:
            logger.warning("searchr1: retrieval server %s answers again", self.url)
        self._failing = False
        return results

    def probe(self) -> None:
        """Search one query on every replica, with at most one retry each.

        Raises:
            RetrievalError: no replica answered; the message names every URL, its error and what to do.
        """
        errors = {}
        for url in self.urls:
            single = ReplicaSet([url], self.timeout, 1, connect_timeout=self.connect_timeout)
            try:
                answer, _ = single.request(
                    "POST", "/retrieve", dumps({"queries": [PROBE_QUERY], "topk": 1}), _JSON_HEADERS,
                    min(self.max_retries, 1), self.backoff,
                )  # fmt: skip
                self._parse(self._decode(answer, url), 1)
            except RetrievalError as err:
                errors[url] = str(err)
            finally:
                single.close()
        if len(errors) == len(self.urls):
            raise RetrievalError(
                f"no retrieval server answers at {', '.join(self.urls)}: {' | '.join(errors.values())} "
                "Start one (`searchr1-retrieval serve --index DIR --port PORT`, docs/retrieval.md) or point the "
                "retriever's `url` at a running one; training on 'Search failed' observations would waste the run."
            )
        for url, err in errors.items():
            logger.warning("searchr1: retrieval replica %s does not answer (%s); the others will be used", url, err)

    def _search_batch(self, queries: list[str], topk: int) -> list[list[Passage]]:
        step = self.max_queries_per_request
        parts = [queries[start : start + step] for start in range(0, len(queries), step)]
        if len(parts) == 1:
            return self._request(parts[0], topk)
        if self._senders is None:
            self._senders = ThreadPoolExecutor(self.max_connections, thread_name_prefix="retrieval-client")
        # all parts in flight at once; map yields them in order and re-raises the first failure
        return [r for part in self._senders.map(self._request, parts, [topk] * len(parts)) for r in part]

    def _request(self, queries: list[str], topk: int) -> list[list[Passage]]:
        """One ``/retrieve`` request (with its retries), parsed."""
        payload = {"queries": queries, "topk": topk, "return_scores": True}
        return self._parse(self._post(payload), len(queries))

    def _post(self, payload: dict[str, Any]) -> Any:
        resp, url = self._replicas.request(
            "POST", "/retrieve", dumps(payload), _JSON_HEADERS, self.max_retries, self.backoff
        )
        return self._decode(resp, url)

    def _decode(self, resp: HTTPAnswer, url: str) -> Any:
        """The parsed JSON of a non-retried answer; :class:`RetrievalError` for a 4xx or a non-JSON body."""
        if resp.status == 402:  # the server's paid engine reached its max_cost: stop like an in-process one
            raise BudgetExhausted(f"retrieval server {url}: {resp.text[:300]}")
        if resp.status >= 400:
            raise RetrievalError(f"retrieval server {url} refused the request: HTTP {resp.status}: {resp.text[:300]}")
        try:
            return loads(resp.body)
        except ValueError:
            raise RetrievalError(f"retrieval server {url} sent a non-JSON reply: {resp.text[:200]!r}") from None

    def _parse(self, body: Any, n: int) -> list[list[Passage]]:
        try:
            return parse_result(body, n)
        except (KeyError, TypeError, ValueError) as err:
            raise RetrievalError(
                f"retrieval server {self.url} sent an unexpected reply ({err}): {str(body)[:200]}"
            ) from None

    def health(self, replica: int = 0) -> dict[str, Any]:
        """The ``GET /health`` answer of server ``replica`` (raises :class:`RetrievalError` if unreachable)."""
        url = self.urls[replica]
        try:
            resp = self._replicas.pools[replica].request("GET", "/health")
            if resp.status != 200:
                raise RetrievalError(f"retrieval server {url} health check failed: HTTP {resp.status}")
            return loads(resp.body)
        except (OSError, http.client.HTTPException, ValueError) as err:
            raise RetrievalError(f"retrieval server {url} health check failed: {err}") from None

    def metrics(self) -> dict[str, float]:
        """The counters of :class:`~searchr1.retrieval.base.CachedRetriever` plus each replica's health."""
        return {**super().metrics(), **self._replicas.metrics()}

    def close(self) -> None:
        """Close the connection pool and the sender threads."""
        if self._senders is not None:
            self._senders.shutdown(wait=False, cancel_futures=True)
            self._senders = None
        self._replicas.close()

    def __enter__(self) -> HTTPRetriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
