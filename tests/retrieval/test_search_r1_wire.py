"""Wire compatibility with Search-R1 a14dc3a, both ways.

* Our client reads every answer shape of Search-R1's server family (``fixtures/search_r1_responses.json``,
  written from ``search_r1/search/*.py``), and talks to a live server that answers in their BM25 shape.
* Our server answers what their client (``LLMGenerationManager._batch_search``) posts: all searches of a turn
  in one ``{"queries": [...], "topk": 3, "return_scores": true}``, including empty queries from
  ``<search> </search>`` and a falsy topk.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from searchr1.retrieval import BM25Retriever, HTTPRetriever, create_app
from searchr1.retrieval.client import parse_result
from searchr1.retrieval.server import ServerLimits

FIXTURES = json.loads((Path(__file__).parent / "fixtures" / "search_r1_responses.json").read_text())
CASES = sorted(k for k in FIXTURES if not k.startswith("_"))


@pytest.fixture(scope="module")
def retriever(hotpot_index: Path) -> BM25Retriever:
    return BM25Retriever(index_dir=str(hotpot_index))


@pytest.mark.parametrize("name", CASES)
def test_parse_result_reads_every_search_r1_shape(name: str) -> None:
    case = FIXTURES[name]
    got = parse_result(case["body"], 2)
    assert [[[p.id, p.title, p.text, p.score] for p in r] for r in got] == case["expected"]
    # what the policy sees is Search-R1's _passages2string: the verbatim first line of contents as the title
    assert got[0][0].title_line == '"Ed Wood (film)"'


def test_parse_result_still_rejects_what_no_server_sends() -> None:
    with pytest.raises(ValueError, match="1 result lists for 2 queries"):
        parse_result({"result": [[]]}, 2)
    with pytest.raises(KeyError):
        parse_result({"result": [[{"document": {"id": "1"}}]]}, 1)
    with pytest.raises(TypeError):
        parse_result({"result": [[7]]}, 1)


class _SearchR1BM25Handler(BaseHTTPRequestHandler):
    """Answers ``/retrieve`` as Search-R1's BM25 server with stored docs: ``{title, text, contents}``, no id."""

    retriever: BM25Retriever
    posted: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's hook name
        payload = json.loads(self.rfile.read(int(self.headers["content-length"])))
        type(self).posted.append(payload)
        found = self.retriever.search(payload["queries"], payload["topk"] or 3)
        result = []
        for passages in found:
            docs = []
            for p in passages:
                first, _, rest = p.contents.partition("\n")
                doc = {"title": first.strip('"'), "text": rest, "contents": p.contents}
                docs.append({"document": doc, "score": p.score} if payload.get("return_scores") else doc)
            result.append(docs)
        body = json.dumps({"result": result}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_http_retriever_reads_a_search_r1_bm25_server(retriever: BM25Retriever) -> None:
    handler = type("Handler", (_SearchR1BM25Handler,), {"retriever": retriever, "posted": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        queries = ["Ed Wood film director", "Scott Derrickson nationality"]
        with HTTPRetriever(f"http://127.0.0.1:{httpd.server_address[1]}", max_retries=0) as remote:
            got = remote.search(queries, topk=3)
    finally:
        httpd.shutdown()
        httpd.server_close()
    direct = retriever.search(queries, topk=3)
    assert handler.posted == [{"queries": queries, "topk": 3, "return_scores": True}]  # Search-R1's own request
    assert [[(p.contents, p.title, p.text) for p in r] for r in got] == [
        [(p.contents, p.title, p.text) for p in r] for r in direct
    ]
    assert [p.score for r in got for p in r] == pytest.approx([p.score for r in direct for p in r])
    assert all(p.id == "" for r in got for p in r)  # the BM25 server sends no id


@pytest.fixture(scope="module")
def client(retriever: BM25Retriever):
    with TestClient(create_app(retriever, ServerLimits())) as c:
        yield c


def _post(client: TestClient, queries: list[str], topk) -> list:
    resp = client.post("/retrieve", json={"queries": queries, "topk": topk, "return_scores": True})
    assert resp.status_code == 200, resp.text[:300]
    result = resp.json()["result"]
    assert len(result) == len(queries)
    return result


def test_grpo_step_of_2560_queries_in_one_post(client: TestClient, retriever, hotpot_questions) -> None:
    questions = [q["question"] for q in hotpot_questions]
    queries = [f"{questions[i % len(questions)]} {i // len(questions)}" for i in range(512 * 5)]
    calls_before = client.app.state.batcher.search_calls
    result = _post(client, queries, 3)
    assert client.app.state.batcher.search_calls - calls_before >= 2560 // 512  # streamed, not one call
    direct = retriever.search(queries[:50] + queries[-50:], topk=3)
    assert [[d["document"]["id"] for d in r] for r in result[:50] + result[-50:]] == [[p.id for p in r] for r in direct]


def test_empty_queries_get_empty_lists_and_others_are_answered(client: TestClient, retriever) -> None:
    result = _post(client, ["", "Ed Wood film director", "   ", "\n"], 3)
    assert result[0] == result[2] == result[3] == []
    assert [d["document"]["id"] for d in result[1]] == [p.id for p in retriever.search(["Ed Wood film director"], 3)[0]]
    assert _post(client, [" "], 3) == [[]]


@pytest.mark.parametrize("topk", [0, None])
def test_falsy_topk_is_the_server_default(client: TestClient, topk) -> None:
    assert [len(r) for r in _post(client, ["Ed Wood film", "Scott Derrickson"], topk)] == [3, 3]


def test_degenerate_long_query_is_cut_not_failed(client: TestClient, retriever) -> None:
    degenerate = "Ed Wood " * 1250  # 10,000 characters, as a looping policy writes
    result = _post(client, ["Scott Derrickson", degenerate], 3)
    assert [d["document"]["id"] for d in result[0]] == [p.id for p in retriever.search(["Scott Derrickson"], 3)[0]]
    assert [d["document"]["id"] for d in result[1]] == [p.id for p in retriever.search([degenerate[:4096]], 3)[0]]


@pytest.mark.parametrize(
    "payload,status",
    [
        ({"queries": "Ed Wood"}, 422),
        ({"queries": ["ok", 3]}, 422),
        ({"queries": ["ok"], "topk": -1}, 422),
        ({"queries": ["ok"], "topk": 101}, 422),
        ({"queries": ["q"] * 16_385}, 413),
    ],
)
def test_malformed_requests_still_get_4xx(client: TestClient, payload: dict, status: int) -> None:
    assert client.post("/retrieve", json=payload).status_code == status


def test_16384_queries_in_one_post(client: TestClient, retriever, hotpot_questions) -> None:
    questions = [q["question"] for q in hotpot_questions]
    queries = [f"{questions[i % len(questions)]} {i}" for i in range(16_384)]
    result = _post(client, queries, 3)
    sample = list(range(0, 16_384, 997))
    direct = retriever.search([queries[i] for i in sample], topk=3)
    assert [[d["document"]["id"] for d in result[i]] for i in sample] == [[p.id for p in r] for r in direct]
