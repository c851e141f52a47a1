"""Loopback fakes of SerpAPI, Serper and Google Programmable Search: a real HTTP server in a thread.

:class:`FakeSearchEngines` answers on ``127.0.0.1`` in each engine's documented formats (request parameters, answer
JSON, error bodies and 429 answers, as the engines' API references describe them; no live traffic was recorded:
these machines have no internet):

- ``GET /serpapi/search?engine=&q=&api_key=``: ``{"search_metadata", "search_parameters", "organic_results":
  [{"position", "title", "link", "snippet"}]}``; a bad key 401 ``{"error": "Invalid API key. ..."}``;
  429 ``{"error": ...}``.
- ``POST /serper/search`` (``X-API-KEY`` header, JSON ``{"q", "num"}``): ``{"searchParameters", "organic": [...],
  "credits": 1}``; a bad key 403 ``{"message": "Unauthorized.", "statusCode": 403}``; 429 the same shape.
- ``GET /google/customsearch/v1?key=&cx=&q=&num=``: ``{"kind": "customsearch#search", "items": [{"title", "link",
  "snippet", ...}]}`` (no ``items`` when nothing matched); errors ``{"error": {"code", "message", "errors":
  [{"reason"}], "status"}}`` (400 bad key or ``num`` over 10, 429 ``rateLimitExceeded``).
- ``GET /pages/<n>.html``: an HTML page whose ``<p>`` paragraphs hold result ``n``'s text (for fetch-and-trim).

Results come from ``search(query, k) -> [(title, text)]`` (e.g. BM25 over a corpus); a result's snippet is the
text's first 30 words with ``...``. Counters (``received``, ``answered`` per engine) and faults (``rate_limit_burst``:
the next ``n`` searches get a 429 with ``Retry-After``; ``fail_next``: the next ``n`` get ``status``) are
thread-safe. Used by the tests; also handy for trying a config without an account.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

SearchFn = Callable[[str, int], list[tuple[str, str]]]

_BAD_KEY = {
    "serpapi": (401, {"error": "Invalid API key. Your API key should be here: https://serpapi.com/manage-api-key"}),
    "serper": (403, {"message": "Unauthorized.", "statusCode": 403}),
    "google_cse": (400, {"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                                   "errors": [{"message": "API key not valid. Please pass a valid API key.",
                                               "domain": "global", "reason": "badRequest"}],
                                   "status": "INVALID_ARGUMENT"}}),
}  # fmt: skip
_RATE_LIMITED = {
    "serpapi": {"error": "You have exceeded the hourly throughput limit for your plan. Please retry later."},
    "serper": {"message": "Too many requests, please slow down.", "statusCode": 429},
    "google_cse": {"error": {"code": 429, "message": "Quota exceeded for quota metric 'Queries' and limit 'Queries "
                             "per minute' of service 'customsearch.googleapis.com'.",
                             "errors": [{"message": "Quota exceeded", "domain": "global",
                                         "reason": "rateLimitExceeded"}], "status": "RESOURCE_EXHAUSTED"}},
}  # fmt: skip
_INVALID = {
    "error": {
        "code": 400,
        "message": "Request contains an invalid argument.",
        "errors": [{"reason": "badRequest"}],
        "status": "INVALID_ARGUMENT",
    }
}


def _server_error(engine: str, status: int) -> dict:
    if engine == "google_cse":
        return {"error": {"code": status, "message": "Backend Error", "errors": [{"reason": "backendError"}]}}
    if engine == "serper":
        return {"message": "Internal server error", "statusCode": status}
    return {"error": "Internal server error. Please retry."}


def word_overlap_search(passages: list[tuple[str, str]]) -> SearchFn:
    """A small search over ``(title, text)`` pairs: passages ranked by words shared with the query."""

    def search(query: str, k: int) -> list[tuple[str, str]]:
        words = set(query.lower().split())
        ranked = sorted(passages, key=lambda p: -len(words & set((p[0] + " " + p[1]).lower().split())))
        return ranked[:k]

    return search


class FakeSearchEngines:
    """The three engines on one loopback port (see the module doc). Use as a context manager or call ``close``.

    Args:
        search: ``(query, k) -> [(title, text)]`` answering every engine.
        api_key: the key every engine accepts.
        cx: the Programmable Search Engine id Google accepts.
    """

    def __init__(self, search: SearchFn, api_key: str = "test-key", cx: str = "test-cx") -> None:
        self.search, self.api_key, self.cx = search, api_key, cx
        self.received: Counter[str] = Counter()  # search requests per engine, refused ones included
        self.answered: Counter[str] = Counter()  # 200 answers with results per engine
        self.queries: list[str] = []
        self.pages: dict[int, str] = {}
        self._faults: list[tuple[int, float]] = []  # (status, retry_after) for the next searches
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"fake": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), daemon=True, name="fake-engines"
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def base_url(self, engine: str) -> str:
        """The ``base_url`` an :class:`~searchr1.retrieval.online.OnlineRetriever` of ``engine`` uses here."""
        path = {"serpapi": "/serpapi/search", "serper": "/serper/search", "google_cse": "/google/customsearch/v1"}
        return self.url + path[engine]

    def rate_limit_burst(self, n: int, retry_after: float = 0.0) -> None:
        """Answer the next ``n`` searches (any engine) with the engine's 429 and ``Retry-After: retry_after``."""
        with self._lock:
            self._faults.extend([(429, retry_after)] * n)

    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer the next ``n`` searches with ``status`` and the engine's error body."""
        with self._lock:
            self._faults.extend([(status, -1.0)] * n)

    def _take_fault(self) -> tuple[int, float] | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    def results(self, engine: str, query: str, k: int) -> list[dict]:
        """The result items of ``query``, each with a link to its fake page."""
        items = []
        for title, text in self.search(query, k):
            with self._lock:
                n = len(self.pages)
                self.pages[n] = text
            snippet = " ".join(text.split()[:30]) + " ..."
            link = f"{self.url}/pages/{n}.html"
            items.append({"title": title, "link": link, "snippet": snippet})
        return items

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeSearchEngines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Handler(BaseHTTPRequestHandler):
    fake: FakeSearchEngines

    def log_message(self, format: str, *args: object) -> None:  # quiet: tests read counters, not logs
        return

    def _send(self, status: int, body: dict | str, headers: dict[str, str] | None = None) -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "text/html" if isinstance(body, str) else "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        params = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path.startswith("/pages/"):
            n = int(parts.path.rsplit("/", 1)[1].split(".")[0])
            text = self.fake.pages.get(n)
            if text is None:
                self._send(404, "<html><body><p>Not found</p></body></html>")
                return
            body = f"<html><head><script>var x = 1;</script></head><body><p>Menu</p><p>{text}</p></body></html>"
            self._send(200, body)
        elif parts.path == "/serpapi/search":
            self._search("serpapi", params.get("api_key"), params.get("q", ""), 10, params)
        elif parts.path == "/google/customsearch/v1":
            self._search("google_cse", params.get("key"), params.get("q", ""), int(params.get("num", 10)), params)
        else:
            self._send(404, {"error": f"no route {parts.path}"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        if urlsplit(self.path).path == "/serper/search":
            self._search("serper", self.headers.get("x-api-key"), body.get("q", ""), int(body.get("num", 10)), body)
        else:
            self._send(404, {"message": "Not found", "statusCode": 404})

    def _search(self, engine: str, key: str | None, query: str, num: int, params: dict) -> None:
        fake = self.fake
        with fake._lock:
            fake.received[engine] += 1
        if key != fake.api_key:
            self._send(*_BAD_KEY[engine])
            return
        fault = fake._take_fault()
        if fault is not None:
            status, retry_after = fault
            if status == 429:
                self._send(429, _RATE_LIMITED[engine], {"retry-after": f"{retry_after:g}"})
            else:
                self._send(status, _server_error(engine, status))
            return
        if engine == "google_cse" and (params.get("cx") != fake.cx or not 1 <= num <= 10):
            self._send(400, _INVALID)
            return
        with fake._lock:
            fake.answered[engine] += 1
            fake.queries.append(query)
        items = fake.results(engine, query, num)
        self._send(200, _answer(engine, query, items))


def _answer(engine: str, query: str, items: list[dict]) -> dict:
    if engine == "serpapi":
        organic = [{"position": i + 1, **item} for i, item in enumerate(items)]
        meta = {"search_metadata": {"status": "Success"}, "search_parameters": {"q": query}}
        if not organic:
            return {**meta, "error": "Google hasn't returned any results for this query."}
        return {**meta, "organic_results": organic}
    if engine == "serper":
        organic = [{**item, "position": i + 1} for i, item in enumerate(items)]
        return {
            "searchParameters": {"q": query, "type": "search", "engine": "google"},
            "organic": organic,
            "credits": 1,
        }
    out = {"kind": "customsearch#search", "queries": {"request": [{"searchTerms": query}]}}
    if items:
        out["items"] = [{"kind": "customsearch#result", "displayLink": "127.0.0.1", **item} for item in items]
    return out
