"""Paid web search engines against loopback fakes (``searchr1.testing.fake_engines``): mapping, disk cache, retries,
cost, ``max_cost``, and the API key kept out of everything. No test reaches the internet."""

from __future__ import annotations

import contextlib
import logging
import pickle
import threading

import pytest

from searchr1.retrieval import (
    BudgetExhausted,
    GoogleCSERetriever,
    RetrievalError,
    SearchCache,
    SerpAPIRetriever,
    SerperRetriever,
)
from searchr1.retrieval import online as online_module
from searchr1.retrieval.engines import ONLINE_ENGINES, sanitize_query
from searchr1.retrieval.online import retry_after_seconds
from searchr1.retrieval.pages import collect_context, page_text, trim
from searchr1.testing.fake_engines import FakeSearchEngines, word_overlap_search

KEY = "sk-test-SECRET-9f8e7d"
DOCS = [
    ("Paris", "Paris is the capital and most populous city of France, on the Seine river in the north."),
    ("Berlin", "Berlin is the capital and largest city of Germany by both area and by population today."),
    ("Hamlet", "Hamlet is a tragedy written by William Shakespeare sometime between 1599 and 1601 in London."),
]
ENGINES = ["serpapi", "serper", "google_cse"]


@pytest.fixture
def fake():
    with FakeSearchEngines(word_overlap_search(DOCS), api_key=KEY, cx="cx-1") as engines:
        yield engines


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("TEST_SEARCH_KEY", KEY)


def make(fake, engine, tmp_path, **kw):
    kw.setdefault("requests_per_second", 0)
    kw.setdefault("backoff", 0.0)
    extra = {"cx": "cx-1"} if engine == "google_cse" else {}
    cls = ONLINE_ENGINES.get(engine)
    return cls(api_key_env="TEST_SEARCH_KEY", base_url=fake.base_url(engine), cache_dir=str(tmp_path), **extra, **kw)


@pytest.mark.parametrize("engine", ENGINES)
def test_results_map_to_title_and_snippet(fake, engine, tmp_path):
    r = make(fake, engine, tmp_path)
    out = r.search(["capital of France", "capital of France", "   "], 2)
    assert out[0] is out[1] and out[2] == []  # a repeat shares the result; a blank query sends nothing
    assert [p.title for p in out[0]] == ["Paris", "Berlin"]
    # Search-R1's mapping: '"title"\nsnippet'; the fake's snippet is the text's first 30 words + " ..." (Google CSE
    # keeps the "..."-separated parts of more than five words, so drops the trailing "...")
    words = " ".join(DOCS[0][1].split()[:30])
    assert out[0][0].contents == f'"Paris"\n{words}' + ("" if engine == "google_cse" else " ...")
    assert out[0][0].id.endswith("/pages/0.html")
    assert fake.answered[engine] == 1 and r.spend().requests == 1


def test_serpapi_answer_box_then_organic_then_related_cut_to_k():
    body = {
        "answer_box": {"title": "Box", "snippet": "boxed"},
        "organic_results": [{"title": f"O{i}", "snippet": f"s{i}", "link": f"https://x/{i}"} for i in range(5)],
        "related_questions": [{"question": "Q?", "snippet": "qs"}],
    }
    titles = [r.title for r in SerpAPIRetriever.parse_results(None, body, 3)]  # parse needs no instance state
    assert titles == ["Box", "O0", "O1", "O2", "Q?"]  # OnlineRetriever cuts this to k=3 (Search-R1 keeps 1 + 2k)
    assert (
        SerpAPIRetriever.parse_results(None, {"error": "Google hasn't returned any results for this query."}, 3) == []
    )
    with pytest.raises(ValueError, match="Invalid API key"):
        SerpAPIRetriever.parse_results(None, {"error": "Invalid API key."}, 3)


def test_google_cse_sanitises_and_caps_num(fake, tmp_path):
    assert sanitize_query("who's  the (author)\tof: Hamlet?") == "who s the author of Hamlet"
    r = make(fake, "google_cse", tmp_path)
    assert len(r.search(["Hamlet, by whom?"], 15)[0]) == 3  # num=10 sent (the fake refuses > 10), 3 docs exist
    assert fake.queries == ["Hamlet by whom"]
    assert r.search(["?!"], 3) == [[]] and fake.received["google_cse"] == 1  # nothing left after sanitising


@pytest.mark.parametrize("engine", ENGINES)
def test_disk_cache_is_shared_by_instances_and_keyed_by_normalised_query_and_k(fake, engine, tmp_path):
    make(fake, engine, tmp_path).search(["Who wrote Hamlet"], 2)
    again = make(fake, engine, tmp_path)  # a new process/run over the same cache folder
    assert again.search(["  who WROTE   hamlet "], 2)[0][0].title == "Hamlet"
    assert fake.answered[engine] == 1 and again.spend().disk_hits == 1 and again.spend().requests == 0
    again.search(["who wrote hamlet"], 3)  # another k is another key
    assert fake.answered[engine] == 2


@pytest.mark.parametrize("engine", ENGINES)
def test_rate_limit_burst_is_retried_and_not_billed(fake, engine, tmp_path, monkeypatch):
    waits = []
    monkeypatch.setattr(online_module.time, "sleep", waits.append)
    r = make(fake, engine, tmp_path, backoff=0.5, price_per_query=0.25)
    fake.rate_limit_burst(3, retry_after=7)
    fake.fail_next(1, status=503)
    out = r.search(["capital of Germany"], 1)
    assert out[0][0].title == "Berlin"
    spend = r.spend()
    assert (spend.attempts, spend.rate_limited, spend.requests) == (5, 3, 1)
    assert spend.cost == 0.25 and spend.scope_cost == 0.25  # only the answered request is billed
    assert waits == [7, 7, 7, 4.0]  # Retry-After honoured; the 503 (4th retry) backs off 0.5 * 2**3


def test_retry_after_forms():
    assert retry_after_seconds("3") == 3.0 and retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0


@pytest.mark.parametrize("engine", ENGINES)
def test_errors_after_retries_and_4xx_at_once(fake, engine, tmp_path):
    r = make(fake, engine, tmp_path, max_retries=2, price_per_query=1.0)
    fake.fail_next(3, status=500)
    with pytest.raises(RetrievalError, match="failed after 3 attempts: HTTP 500"):
        r.search(["capital of France"], 1)
    assert r.spend().scope_cost == 0.0  # the reservation was released
    if engine == "google_cse":  # the engine's own 400 body, not retried
        bad = make(fake, engine, tmp_path, max_retries=5)
        bad.cx = "wrong"
        with pytest.raises(RetrievalError, match="refused the request: HTTP 400: INVALID_ARGUMENT"):
            bad.search(["capital of France"], 1)
        assert bad.spend().attempts == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_api_key_never_leaks(fake, engine, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    r = make(fake, engine, tmp_path, max_retries=0)
    r.search(["capital of France"], 1)
    monkeypatch.setenv("TEST_SEARCH_KEY", KEY + "-wrong")  # the engine answers 401/403/400 with its error body
    with pytest.raises(RetrievalError) as bad_key:
        r.search(["who wrote hamlet"], 1)
    monkeypatch.setenv("TEST_SEARCH_KEY", KEY)
    dead = make(fake, engine, tmp_path, max_retries=0)
    dead.base_url = "http://127.0.0.1:9/search?key=" + KEY  # a URL holding the key, as a transport error could show
    with pytest.raises(RetrievalError) as transport:
        dead.search(["berlin"], 1)
    texts = [repr(r), str(r.metrics()), str(bad_key.value), str(transport.value), caplog.text, str(vars(r))]
    assert [i for i, t in enumerate(texts) if KEY in t] == []
    assert "<api key>" in str(transport.value)
    assert KEY.encode() not in (tmp_path / "search.sqlite").read_bytes()
    with pytest.raises(TypeError):  # not picklable (thread pool); a checkpoint cannot carry it by accident
        pickle.dumps(r)


def test_missing_key_says_which_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("TEST_SEARCH_KEY")
    with pytest.raises(ValueError, match="TEST_SEARCH_KEY .* is not set.*export TEST_SEARCH_KEY="):
        SerperRetriever(api_key_env="TEST_SEARCH_KEY", cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="needs cx"):
        GoogleCSERetriever(api_key_env="TEST_SEARCH_KEY", cache_dir=str(tmp_path))


def test_max_cost_refuses_the_request_that_would_exceed_it(fake, tmp_path):
    r = make(fake, "serper", tmp_path, price_per_query=0.4, max_cost=1.0)
    r.search(["capital of France", "capital of Germany"], 1)  # 0.8 spent
    with pytest.raises(BudgetExhausted, match="spent 0.8000 of max_cost 1.0000"):
        r.search(["who wrote hamlet"], 1)  # 1.2 > 1.0: refused, nothing sent
    assert fake.answered["serper"] == 2 and fake.received["serper"] == 2
    assert r.search(["capital of france"], 1)[0][0].title == "Paris"  # cached queries stay free
    other = make(fake, "serper", tmp_path, price_per_query=0.4, max_cost=1.0)  # another process, same scope
    with pytest.raises(BudgetExhausted):
        other.search(["who wrote hamlet"], 1)
    fresh = make(fake, "serper", tmp_path, price_per_query=0.4, max_cost=1.0, budget_scope="run-2")
    assert fresh.search(["who wrote hamlet"], 1)[0][0].title == "Hamlet"


def test_ledger_never_overspends_under_concurrent_writers(tmp_path):
    caches = [SearchCache(tmp_path) for _ in range(4)]  # four connections: as four processes would hold
    granted = []

    def spend(cache):
        for i in range(10):
            with contextlib.suppress(BudgetExhausted):
                granted.append(cache.reserve("s", "serper", f"q{i}", 1, 0.1, max_cost=1.55))

    threads = [threading.Thread(target=spend, args=(c,)) for c in caches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 15 and caches[0].spent("s").requests == 15  # 15 x 0.1 <= 1.55 < 16 x 0.1


def test_fetch_pages_reads_the_paragraph_around_the_snippet(fake, tmp_path):
    r = make(fake, "serper", tmp_path, fetch_pages=True, page_chars=40)
    p = r.search(["capital of France"], 1)[0][0]
    assert p.text == "Paris is the capital and most populous"  # the page's paragraph, trimmed at a word
    assert page_text("<p>a <b>b</b></p><script>x</script><p>c</p>") == "a b\nc"
    assert collect_context("one two three four five six ... x", "zero\nsay one two three four five six now") == (
        "say one two three four five six now"
    )
    assert trim("aaaa bbbb cccc", 11) == "aaaa bbbb"


def test_server_answers_402_at_max_cost_and_the_client_stops(fake, tmp_path):
    from fastapi.testclient import TestClient

    from searchr1.retrieval.client import HTTPRetriever
    from searchr1.retrieval.pool import HTTPAnswer
    from searchr1.retrieval.server import create_app

    r = make(fake, "serper", tmp_path, price_per_query=1.0, max_cost=1.0)
    client = TestClient(create_app(r))
    assert client.post("/retrieve", json={"queries": ["capital of France"], "topk": 1}).status_code == 200
    refused = client.post("/retrieve", json={"queries": ["who wrote hamlet"], "topk": 1})
    assert refused.status_code == 402 and "search budget exhausted" in refused.json()["detail"]
    assert fake.answered["serper"] == 1
    with pytest.raises(BudgetExhausted, match="search budget exhausted"):  # 402 is not retried, and not a failed search
        HTTPRetriever("http://127.0.0.1:9")._decode(HTTPAnswer(402, refused.content), "http://127.0.0.1:9")
