"""Paid web search engines as retrievers, with a budget: disk cache, rate limit, retries, cost counter, ``max_cost``.

:class:`OnlineRetriever` is the shared machinery; the engines (SerpAPI, Serper, Google Programmable Search) in
:mod:`~searchr1.retrieval.engines` only say how a request is built and how the answer maps to passages. One query
of a batch goes through these stages:

1. blank query: no passages, no request;
2. the :class:`~searchr1.retrieval.search_cache.SearchCache` on disk, keyed by ``(engine, normalised query, k)``:
   a hit costs nothing (GRPO's repeats across samples, steps, runs and resumes);
3. the spend ledger reserves ``price_per_query`` under ``budget_scope``, or raises
   :class:`~searchr1.retrieval.search_cache.BudgetExhausted` when that would pass ``max_cost`` (nothing is sent);
4. the request, at most ``requests_per_second`` per process, retried on connection errors, timeouts, 429 and 5xx
   with exponential backoff (``backoff * 2**retry``, at most ``max_backoff``), a ``Retry-After`` header taking
   precedence; an answer that never came is released from the ledger and becomes a
   :class:`~searchr1.retrieval.types.RetrievalError` (the policy sees a failed search), a 4xx other than 429 at once;
5. the answer mapped to passages as Search-R1 maps it (``"title"\\nsnippet``), optionally with the page text
   around the snippet (:mod:`~searchr1.retrieval.pages`), and stored in the cache.

The API key is read from the environment variable named by ``api_key_env`` for each request and kept nowhere:
not in an attribute (so not in a ``repr``, a pickled object, a checkpoint or the CLI's saved config, which hold the
variable's name), never in a log line, and redacted from every error message (engines that take it in the URL
query would otherwise echo it in a transport error).
"""

from __future__ import annotations

import email.utils
import logging
import os
import re
import threading
import time
from abc import abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import httpx

from searchr1.retrieval.base import CachedRetriever
from searchr1.retrieval.pages import collect_context, is_page_link, page_text, trim
from searchr1.retrieval.search_cache import SearchCache, normalise_query
from searchr1.retrieval.types import Passage, RetrievalError

DEFAULT_CACHE_DIR = "~/.cache/searchr1/search"
_KEY_PARAM = re.compile(r"([?&](?:api_key|key)=)[^&\s\"']+")


class RedactKeys(logging.Filter):
    """Blanks ``api_key=``/``key=`` URL parameters in a log record (httpx logs each request's URL at INFO)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _KEY_PARAM.sub(r"\1<api key>", message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


logging.getLogger("httpx").addFilter(RedactKeys())


@dataclass(frozen=True)
class WebResult:
    """One result of a web engine's answer: ``title``, ``snippet`` and the page ``link`` (may be empty)."""

    title: str
    snippet: str
    link: str = ""


@dataclass(frozen=True)
class EngineRequest:
    """One HTTP request to an engine (``params`` go in the URL query, ``json`` in the body)."""

    method: str
    url: str
    params: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    json: dict[str, Any] | None = None


@dataclass
class SearchSpend:
    """What an online retriever has spent (the metrics, the run summary and the cost log carry it).

    Attributes:
        engine: the engine's registry name.
        requests: requests this process sent that the engine answered (billed).
        cost: ``requests * price_per_query``.
        attempts: HTTP requests sent, retries included.
        rate_limited: 429 answers received (each retried, not billed).
        disk_hits: queries answered from the disk cache (free).
        scope: the ledger scope ``max_cost`` applies to.
        scope_requests: requests recorded under ``scope`` by every process so far (billed or in flight).
        scope_cost: their cost.
        max_cost: the scope's budget (None: unlimited).
    """

    engine: str
    requests: int = 0
    cost: float = 0.0
    attempts: int = 0
    rate_limited: int = 0
    disk_hits: int = 0
    scope: str = "default"
    scope_requests: int = 0
    scope_cost: float = 0.0
    max_cost: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: a number of seconds or an HTTP date (None if absent/bad)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


class OnlineRetriever(CachedRetriever):
    """A paid web search engine behind the :class:`~searchr1.retrieval.types.Retriever` interface (see module doc).

    Args:
        api_key_env: name of the environment variable that holds the API key (the key itself is never configured).
        base_url: the engine's endpoint (None: the engine's public one; tests point it at a loopback fake).
        price_per_query: what one answered request costs, in your currency (0: count requests only).
        max_cost: the budget of ``budget_scope``; a request that would pass it is refused with
            :class:`~searchr1.retrieval.search_cache.BudgetExhausted` (None: no limit).
        budget_scope: the ledger name ``max_cost`` applies to; every process using the same ``cache_dir`` and scope
            shares it (ranks, resumes). Use one scope per experiment to budget each on its own.
        cache_dir: folder of the results cache and ledger (``search.sqlite``).
        timeout: seconds per HTTP request.
        max_retries: retries after a failed attempt (connection error, timeout, 429, 5xx).
        backoff: first retry delay in seconds, doubled each retry.
        max_backoff: longest wait before a retry (also caps ``Retry-After``).
        requests_per_second: request starts per second in this process (0: no limit).
        max_workers: queries of a batch searched at once.
        fetch_pages: replace each snippet by the paragraphs of its page around the snippet (pages are not billed).
        page_chars: passage text length kept from a page.
        dedup, cache_size: see :class:`~searchr1.retrieval.base.CachedRetriever` (in-memory, per process).
    """

    engine: ClassVar[str] = ""
    default_url: ClassVar[str] = ""
    max_k: ClassVar[int | None] = None  # most results one request can return (None: no documented limit)

    def __init__(
        self,
        api_key_env: str,
        base_url: str | None = None,
        price_per_query: float = 0.0,
        max_cost: float | None = None,
        budget_scope: str = "default",
        cache_dir: str = DEFAULT_CACHE_DIR,
        timeout: float = 20.0,
        max_retries: int = 6,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        requests_per_second: float = 5.0,
        max_workers: int = 8,
        fetch_pages: bool = False,
        page_chars: int = 1000,
        dedup: bool = True,
        cache_size: int = 0,
    ) -> None:
        super().__init__(dedup=dedup, cache_size=cache_size)
        if price_per_query < 0 or (max_cost is not None and max_cost < 0):
            raise ValueError(f"price_per_query and max_cost must be >= 0, got {price_per_query} and {max_cost}")
        if timeout <= 0 or max_retries < 0 or backoff < 0 or requests_per_second < 0 or max_workers < 1:
            raise ValueError("need timeout > 0, max_retries >= 0, backoff >= 0, requests_per_second >= 0, workers >= 1")
        if not os.environ.get(api_key_env):
            raise ValueError(
                f"{type(self).__name__}: the environment variable {api_key_env} (api_key_env) is not set or empty; "
                f"export {api_key_env}=<your {self.engine} API key> before starting"
            )
        self.api_key_env = api_key_env
        self.base_url = (base_url or self.default_url).rstrip("/")
        self.price_per_query, self.max_cost, self.budget_scope = float(price_per_query), max_cost, budget_scope
        self.timeout, self.max_retries, self.backoff, self.max_backoff = timeout, max_retries, backoff, max_backoff
        self.requests_per_second, self.max_workers = requests_per_second, max_workers
        self.fetch_pages, self.page_chars = fetch_pages, page_chars
        self.disk = SearchCache(cache_dir)
        self._spend = SearchSpend(self.engine, scope=budget_scope, max_cost=max_cost)
        self._client = httpx.Client(timeout=timeout, follow_redirects=True)
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix=f"{self.engine}-search")
        self._next_start = 0.0
        self._rate_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, api_key_env={self.api_key_env!r})"

    # ---- what an engine defines ----

    @abstractmethod
    def build_request(self, query: str, k: int, api_key: str) -> EngineRequest:
        """The HTTP request searching ``query`` for ``k`` results."""

    @abstractmethod
    def parse_results(self, body: Any, k: int) -> list[WebResult]:
        """The results of a 2xx answer, best first (at most ``k``); ``ValueError`` for a body it cannot read."""

    @staticmethod
    def error_message(body: Any) -> str:
        """The message of an error answer's JSON body (engines differ)."""
        return str(body)[:300]

    def search_text(self, query: str) -> str:
        """The text sent for ``query`` (engines that clean queries override it; blank: nothing is sent)."""
        return query

    @property
    def cache_namespace(self) -> str:
        """The cache's engine key: results differ by engine and by whether pages were read."""
        return self.engine + ("+pages" if self.fetch_pages else "")

    # ---- search ----

    def _search_batch(self, queries: list[str], topk: int) -> list[list[Passage]]:
        k = min(topk, self.max_k) if self.max_k else topk
        return list(self._pool.map(self._search_one, queries, [k] * len(queries)))

    def _search_one(self, query: str, k: int) -> list[Passage]:
        query = self.search_text(query)
        key = normalise_query(query)
        if not key:
            return []
        cached = self.disk.get(self.cache_namespace, key, k)
        if cached is not None:
            with self._lock:
                self._spend.disk_hits += 1
            return cached
        row = self.disk.reserve(self.budget_scope, self.engine, key, k, self.price_per_query, self.max_cost)
        try:
            body = self._send_with_retries(query, k)
        except BaseException:
            self.disk.settle(row, billed=False)  # never answered: not billed, the reservation goes
            raise
        self.disk.settle(row, billed=True)
        with self._lock:
            self._spend.requests += 1
            self._spend.cost = self._spend.requests * self.price_per_query
        passages = self._passages(body, k)
        self.disk.put(self.cache_namespace, key, k, passages)
        return passages

    def _passages(self, body: Any, k: int) -> list[Passage]:
        try:
            results = self.parse_results(body, k)[:k]
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise RetrievalError(f"{self.engine} at {self.base_url} sent an unexpected answer ({err})") from None
        texts = self._page_texts(results) if self.fetch_pages else [r.snippet for r in results]
        return [
            Passage.from_contents(r.link, f'"{r.title or "No title."}"\n{text or "No snippet available."}')
            for r, text in zip(results, texts)
        ]

    def _page_texts(self, results: list[WebResult]) -> list[str]:
        """Each result's text from its page (the snippet where the page gives nothing), trimmed."""
        texts = []
        for r in results:
            context = ""
            if r.link and is_page_link(r.link):
                try:
                    resp = self._client.get(r.link, headers={"user-agent": "searchr1"})
                    if resp.status_code == 200:
                        context = collect_context(r.snippet, page_text(resp.text))
                except httpx.HTTPError:
                    context = ""  # a page that cannot be read leaves the snippet
            texts.append(trim(context or r.snippet, self.page_chars))
        return texts

    def _send_with_retries(self, query: str, k: int) -> Any:
        """The parsed JSON of the engine's 2xx answer, after up to ``max_retries`` retries."""
        api_key = os.environ.get(self.api_key_env, "")
        try:
            return self._attempts(self.build_request(query, k, api_key), api_key)
        except RetrievalError as err:  # whatever a message quotes (URL, body, transport error), never the key
            raise RetrievalError(self._redact(str(err), api_key)) from None

    def _attempts(self, request: EngineRequest, api_key: str) -> Any:
        problem = ""
        for attempt in range(self.max_retries + 1):
            self._wait_for_slot()
            with self._lock:
                self._spend.attempts += 1
            wait = None
            try:
                resp = self._client.request(
                    request.method, request.url, params=request.params, headers=request.headers, json=request.json
                )
            except httpx.HTTPError as err:
                problem = f"{type(err).__name__}: {err}"
            else:
                if resp.status_code < 300:
                    return self._json(resp)
                problem = f"HTTP {resp.status_code}: {self._message(resp)}"
                if resp.status_code != 429 and resp.status_code < 500:
                    raise RetrievalError(f"{self.engine} at {self.base_url} refused the request: {problem}")
                if resp.status_code == 429:
                    with self._lock:
                        self._spend.rate_limited += 1
                wait = retry_after_seconds(resp.headers.get("retry-after"))
            if attempt < self.max_retries:
                time.sleep(min(self.max_backoff, self.backoff * 2**attempt if wait is None else wait))
        raise RetrievalError(
            f"{self.engine} at {self.base_url} failed after {self.max_retries + 1} attempts: {problem}"
        )

    def _wait_for_slot(self) -> None:
        """Space request starts ``1 / requests_per_second`` apart (across this process's threads)."""
        if not self.requests_per_second:
            return
        with self._rate_lock:
            now = time.monotonic()
            start = max(now, self._next_start)
            self._next_start = start + 1.0 / self.requests_per_second
        if start > now:
            time.sleep(start - now)

    def _json(self, resp: httpx.Response) -> Any:
        try:
            return resp.json()
        except ValueError:
            text = resp.text[:200]
            raise RetrievalError(f"{self.engine} at {self.base_url} sent a non-JSON answer: {text!r}") from None

    def _message(self, resp: httpx.Response) -> str:
        try:
            return self.error_message(resp.json())
        except ValueError:
            return resp.text[:300]

    @staticmethod
    def _redact(text: str, api_key: str) -> str:
        return text.replace(api_key, "<api key>") if api_key else text

    # ---- spend, metrics ----

    def spend(self) -> SearchSpend:
        """This process's spend and its scope's ledger totals (read from disk)."""
        scope = self.disk.spent(self.budget_scope)
        with self._lock:
            out = SearchSpend(**asdict(self._spend))
        out.scope_requests, out.scope_cost = scope.requests, scope.cost
        return out

    def metrics(self) -> dict[str, float]:
        """The :class:`CachedRetriever` counters plus ``online_*`` spend counters."""
        spend = self.spend()
        extra = {
            f"online_{k}": float(v)
            for k, v in spend.as_dict().items()
            if isinstance(v, int | float) and k != "max_cost"
        }
        return {**super().metrics(), **extra}

    def close(self) -> None:
        """Stop the worker threads and close the HTTP client and the cache."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()
        self.disk.close()

    def __enter__(self) -> OnlineRetriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def search_spend(retriever: object) -> SearchSpend | None:
    """The spend of ``retriever`` (or of the online retriever it wraps), None for a free one."""
    spend = getattr(retriever, "spend", None)
    return spend() if callable(spend) else None
