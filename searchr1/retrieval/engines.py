"""The web search engines: SerpAPI, Serper and Google Programmable Search (Custom Search JSON API).

Each says how a query becomes an HTTP request and how the engine's JSON answer becomes
:class:`~searchr1.retrieval.online.WebResult` s; the budget machinery is
:class:`~searchr1.retrieval.online.OnlineRetriever`.
:data:`ONLINE_ENGINES` maps the names ``serpapi``, ``serper``, ``google_cse`` to their classes (``searchr1 serve
--engine``).

Mapping to passages follows Search-R1 (a14dc3a ``search_r1/search/``): ``serp_search_server.py`` shows the answer
box, then the organic results, then the related questions (question as title), each as ``"title"\\nsnippet`` with
``No title.`` / ``No snippet available.`` for missing fields; ``google_search_server.py`` (``--snippet_only``)
sanitises the query to words and spaces and keeps the ``...``-separated snippet parts of more than five words.
Departure: Search-R1's SerpAPI server returns up to ``1 + 2 * topk`` passages (answer box + ``topk`` organic +
``topk`` related); here the same list is cut to ``topk``, the number every other retriever returns.
"""

from __future__ import annotations

import re
from typing import Any

from searchr1.registry import Registry
from searchr1.retrieval.online import EngineRequest, OnlineRetriever, WebResult
from searchr1.retrieval.pages import snippet_segments

ONLINE_ENGINES: Registry[type[OnlineRetriever]] = Registry("online search engine")


def _box_and_lists(body: Any, box_key: str, organic_key: str, related_key: str, k: int) -> list[WebResult]:
    """Answer box, ``k`` organic results, ``k`` related questions (Search-R1's SerpAPI order)."""
    if not isinstance(body, dict):
        raise ValueError(f"the answer is a {type(body).__name__}, not a JSON object")
    out = []
    box = body.get(box_key) or {}
    if box:
        out.append(WebResult(box.get("title", ""), box.get("snippet") or box.get("answer", ""), box.get("link", "")))
    for r in (body.get(organic_key) or [])[:k]:
        out.append(WebResult(r.get("title", ""), r.get("snippet", ""), r.get("link", "")))
    for r in (body.get(related_key) or [])[:k]:
        out.append(WebResult(r.get("question", ""), r.get("snippet", ""), r.get("link", "")))
    return out


@ONLINE_ENGINES.register("serpapi")
class SerpAPIRetriever(OnlineRetriever):
    """Google (or another engine) results through SerpAPI (``GET https://serpapi.com/search``), as Search-R1's
    ``serp_search_server.py``.

    Request: ``engine``, ``q``, ``api_key`` in the query string. Answer: ``organic_results`` (``title``, ``link``,
    ``snippet``), optional ``answer_box`` and ``related_questions``. Errors: ``{"error": message}`` (401 bad key,
    429 over the plan's hourly throughput or out of searches); a 200 with ``"Google hasn't returned any results"``
    is an empty result list, not a failure.

    Args:
        serp_engine: SerpAPI's ``engine`` parameter (``google``, ``bing``, ...).
        api_key_env: environment variable holding the key (default ``SERPAPI_API_KEY``).
        **kwargs: see :class:`~searchr1.retrieval.online.OnlineRetriever`.
    """

    engine = "serpapi"
    default_url = "https://serpapi.com/search"

    def __init__(self, serp_engine: str = "google", api_key_env: str = "SERPAPI_API_KEY", **kwargs: Any) -> None:
        self.serp_engine = serp_engine
        super().__init__(api_key_env=api_key_env, **kwargs)

    @property
    def cache_namespace(self) -> str:
        return f"{super().cache_namespace}:{self.serp_engine}"

    def build_request(self, query: str, k: int, api_key: str) -> EngineRequest:
        return EngineRequest("GET", self.base_url, params={"engine": self.serp_engine, "q": query, "api_key": api_key})

    def parse_results(self, body: Any, k: int) -> list[WebResult]:
        if isinstance(body, dict) and body.get("error"):
            if "returned any results" in str(body["error"]):
                return []
            raise ValueError(f"SerpAPI error: {body['error']}")
        return _box_and_lists(body, "answer_box", "organic_results", "related_questions", k)

    @staticmethod
    def error_message(body: Any) -> str:
        return str(body.get("error", body) if isinstance(body, dict) else body)[:300]


@ONLINE_ENGINES.register("serper")
class SerperRetriever(OnlineRetriever):
    """Google results through Serper (``POST https://google.serper.dev/search``).

    Request: JSON ``{"q": query, "num": n}`` with the key in the ``X-API-KEY`` header (``num``: 10 unless ``k`` is
    larger, Serper's page sizes). Answer: ``organic`` (``title``, ``link``, ``snippet``, ``position``), optional
    ``answerBox`` and ``peopleAlsoAsk`` (``question``, ``snippet``), mapped like SerpAPI's. Errors:
    ``{"message": ..., "statusCode": ...}`` (403 bad key, 400 out of credits, 429 too many requests).

    Args:
        api_key_env: environment variable holding the key (default ``SERPER_API_KEY``).
        **kwargs: see :class:`~searchr1.retrieval.online.OnlineRetriever`.
    """

    engine = "serper"
    default_url = "https://google.serper.dev/search"

    def __init__(self, api_key_env: str = "SERPER_API_KEY", **kwargs: Any) -> None:
        super().__init__(api_key_env=api_key_env, **kwargs)

    def build_request(self, query: str, k: int, api_key: str) -> EngineRequest:
        num = 10 if k <= 10 else 10 * -(-k // 10)
        headers = {"X-API-KEY": api_key, "Content-Type": "application/json"}
        return EngineRequest("POST", self.base_url, headers=headers, json={"q": query, "num": num})

    def parse_results(self, body: Any, k: int) -> list[WebResult]:
        return _box_and_lists(body, "answerBox", "organic", "peopleAlsoAsk", k)

    @staticmethod
    def error_message(body: Any) -> str:
        return str(body.get("message", body) if isinstance(body, dict) else body)[:300]


def sanitize_query(query: str) -> str:
    """Search-R1's ``sanitize_search_query``: punctuation to spaces, whitespace runs to one space, trimmed."""
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", query)).strip()


@ONLINE_ENGINES.register("google_cse", "google")
class GoogleCSERetriever(OnlineRetriever):
    """Google Programmable Search (Custom Search JSON API, ``GET https://www.googleapis.com/customsearch/v1``), as
    Search-R1's ``google_search_server.py --snippet_only``.

    Request: ``key``, ``cx``, ``q`` (sanitised), ``num`` (1 to 10: the API's limit, so at most 10 passages).
    Answer: ``items`` (``title``, ``link``, ``snippet``; absent when nothing matched). Errors:
    ``{"error": {"code", "message", "errors": [{"reason", ...}], "status"}}`` (400 bad key, 403 API not enabled,
    429 ``rateLimitExceeded`` per minute or per day).

    Args:
        cx: the Programmable Search Engine id (not secret; from the control panel).
        api_key_env: environment variable holding the key (default ``GOOGLE_API_KEY``).
        **kwargs: see :class:`~searchr1.retrieval.online.OnlineRetriever`.
    """

    engine = "google_cse"
    default_url = "https://www.googleapis.com/customsearch/v1"
    max_k = 10

    def __init__(self, cx: str = "", api_key_env: str = "GOOGLE_API_KEY", **kwargs: Any) -> None:
        if not cx:
            raise ValueError("GoogleCSERetriever needs cx, your Programmable Search Engine id (programmablesearch)")
        self.cx = cx
        super().__init__(api_key_env=api_key_env, **kwargs)

    @property
    def cache_namespace(self) -> str:
        return f"{super().cache_namespace}:{self.cx}"

    def search_text(self, query: str) -> str:
        return sanitize_query(query)

    def build_request(self, query: str, k: int, api_key: str) -> EngineRequest:
        params = {"key": api_key, "cx": self.cx, "q": query, "num": min(k, 10)}
        return EngineRequest("GET", self.base_url, params=params)

    def parse_results(self, body: Any, k: int) -> list[WebResult]:
        if not isinstance(body, dict):
            raise ValueError(f"the answer is a {type(body).__name__}, not a JSON object")
        out = []
        for item in body.get("items") or []:
            title, snippet = item.get("title", ""), " ".join(snippet_segments(item.get("snippet", "")))
            if title or snippet:
                out.append(WebResult(title, snippet, item.get("link", "")))
        return out[:k]

    @staticmethod
    def error_message(body: Any) -> str:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            reasons = ",".join(e.get("reason", "") for e in error.get("errors", []) if isinstance(e, dict))
            return f"{error.get('status', '')} {error.get('message', '')} ({reasons})"[:300]
        return str(body)[:300]
