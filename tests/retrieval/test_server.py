"""Server: bad inputs get 4xx (TestClient), micro-batching merges concurrent requests, a real uvicorn
subprocess round-trips through HTTPRetriever, and the client fails clearly against a dead port."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from searchr1.retrieval import BM25Retriever, HTTPRetriever, RetrievalError, create_app
from searchr1.retrieval.launch import ServerProcess, free_port
from searchr1.retrieval.server import ServerLimits


@pytest.fixture(scope="module")
def retriever(hotpot_index: Path) -> BM25Retriever:
    return BM25Retriever(index_dir=str(hotpot_index))


@pytest.fixture(scope="module")
def client(retriever: BM25Retriever) -> TestClient:
    limits = ServerLimits(max_queries=50, max_query_chars=200, max_topk=20, max_body_bytes=20_000)
    with TestClient(create_app(retriever, limits)) as c:
        yield c


@pytest.fixture(scope="module")
def server(hotpot_index: Path, tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    log = tmp_path_factory.mktemp("server") / "server.log"
    proc = ServerProcess(hotpot_index, log_path=log)
    try:
        yield proc.start()
    finally:
        proc.stop()  # always terminated, even when start() or a test fails
        assert proc.proc is None or proc.proc.poll() is not None


def test_round_trip_matches_direct_search(client: TestClient, retriever: BM25Retriever) -> None:
    queries = ["Ed Wood film", "Scott Derrickson nationality ünïcödé 漢字 🙂"]
    resp = client.post("/retrieve", json={"queries": queries, "topk": 3, "return_scores": True})
    assert resp.status_code == 200
    direct = retriever.search(queries, topk=3)
    assert resp.json()["result"] == [
        [{"document": {"id": p.id, "contents": p.contents}, "score": pytest.approx(p.score)} for p in r] for r in direct
    ]
    no_scores = client.post("/retrieve", json={"queries": queries, "topk": 2, "return_scores": False}).json()
    assert no_scores["result"][0] == [{"document": {"id": p.id, "contents": p.contents}} for p in direct[0][:2]]
    default = client.post("/retrieve", json={"queries": queries[:1]}).json()["result"]
    assert len(default[0]) == 3  # default topk
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["num_docs"] == 521


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"\xff\xfe", 400, "not valid JSON"),
        (b"[1, 2]", 422, "JSON object"),
        (b"{}", 422, "'queries' is required"),
        (b'{"queries": "Ed Wood"}', 422, "'queries' is required"),
        (b'{"queries": ["ok", 3]}', 422, r"queries\[1\] must be a string"),
        (b'{"queries": ["ok", null]}', 422, r"queries\[1\] must be a string"),
        (b'{"queries": ["ok"], "topk": -5}', 422, "'topk' must be an integer from 1 to 20"),
        (b'{"queries": ["ok"], "topk": 1000000}', 422, "'topk'"),
        (b'{"queries": ["ok"], "topk": 2.5}', 422, "'topk'"),
        (b'{"queries": ["ok"], "topk": true}', 422, "'topk'"),
        (b'{"queries": ["ok"], "topk": "3"}', 422, "'topk'"),
        (b'{"queries": ["ok"], "return_scores": "yes"}', 422, "'return_scores'"),
        (json.dumps({"queries": ["q"] * 51}).encode(), 413, "51 queries in one request; the limit is 50"),
        (json.dumps({"queries": ["x" * 30_000]}).encode(), 413, "exceeds the limit of 20000"),
    ],
)
def test_bad_inputs_get_4xx_with_message(client: TestClient, body: bytes, status: int, message: str) -> None:
    resp = client.post("/retrieve", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == status
    assert re.search(message, resp.json()["detail"])


def test_empty_query_list_and_extra_fields(client: TestClient) -> None:
    assert client.post("/retrieve", json={"queries": []}).json() == {"result": []}
    resp = client.post("/retrieve", json={"queries": ["film"], "topk": 1, "unknown": 1, "return_scores": True})
    assert resp.status_code == 200 and len(resp.json()["result"][0]) == 1


def test_chunked_body_over_limit_is_413(client: TestClient) -> None:
    def gen():
        for _ in range(30):
            yield b" " * 1000

    resp = client.post("/retrieve", content=gen(), headers={"content-type": "application/json"})
    assert resp.status_code == 413


def test_micro_batching_merges_concurrent_requests(hotpot_index: Path, hotpot_questions: list[dict]) -> None:
    retriever = BM25Retriever(index_dir=str(hotpot_index))
    app = create_app(retriever, batch_window_ms=50.0)
    questions = [q["question"] for q in hotpot_questions[:16]]

    async def fire() -> list[dict]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            reqs = [
                c.post("/retrieve", json={"queries": [q], "topk": 2 + i % 3, "return_scores": True})
                for i, q in enumerate(questions)
            ]
            return [r.json() for r in await asyncio.gather(*reqs)]

    replies = asyncio.run(fire())
    batcher = app.state.batcher
    assert batcher.requests == 16 and batcher.batches < 16
    assert retriever.metrics()["backend_calls"] == batcher.batches
    for i, (q, reply) in enumerate(zip(questions, replies)):
        expected = BM25Retriever(index_dir=str(hotpot_index)).search([q], topk=2 + i % 3)[0]
        assert [d["document"]["id"] for d in reply["result"][0]] == [p.id for p in expected]


def test_backend_failure_is_503_not_crash(hotpot_index: Path) -> None:
    class Broken(BM25Retriever):
        def _search_batch(self, queries, topk):
            raise RuntimeError("index file vanished")

    with TestClient(create_app(Broken(index_dir=str(hotpot_index)))) as c:
        resp = c.post("/retrieve", json={"queries": ["x"]})
        assert resp.status_code == 503 and "index file vanished" in resp.json()["detail"]
        assert c.post("/retrieve", json={"queries": ["x"]}).status_code == 503  # still serving


def test_http_retriever_round_trip_through_uvicorn(server: ServerProcess, retriever: BM25Retriever) -> None:
    queries = ["Ed Wood film", "Shirley Temple", "Ed Wood film", "Kiss and Tell"]
    with HTTPRetriever(server.url, timeout=10.0) as remote:
        got = remote.search(queries, topk=4)
        assert remote.metrics()["unique_queries"] == 3
        assert remote.health()["num_docs"] == 521
    expected = retriever.search(queries, topk=4)
    assert [[(p.id, p.raw_contents) for p in r] for r in got] == [[(p.id, p.raw_contents) for p in r] for r in expected]
    assert [p.score for r in got for p in r] == pytest.approx([p.score for r in expected for p in r])
    split = HTTPRetriever(server.url, max_queries_per_request=2, dedup=False)
    assert [[p.id for p in r] for r in split.search(queries, topk=4)] == [[p.id for p in r] for r in got]


def test_http_retriever_4xx_is_immediate_clear_error(server: ServerProcess) -> None:
    remote = HTTPRetriever(server.url, max_retries=3, backoff=5.0)
    start = time.monotonic()
    with pytest.raises(RetrievalError, match="refused the request: HTTP 422.*'topk'"):
        remote.search(["Ed Wood"], topk=101)  # over the server's max_topk
    assert time.monotonic() - start < 4.0  # no backoff sleeps for a client error


def test_http_retriever_dead_port_retries_then_raises() -> None:
    port = free_port()
    remote = HTTPRetriever(f"http://127.0.0.1:{port}", timeout=0.5, max_retries=2, backoff=0.05)
    start = time.monotonic()
    with pytest.raises(RetrievalError, match=r"failed after 3 attempts: cannot reach the server"):
        remote.search(["anything"], topk=3)
    assert time.monotonic() - start >= 0.05 + 0.1  # slept backoff, then 2 * backoff


def test_http_retriever_timeout() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)  # the kernel accepts connections, nobody ever answers
    try:
        remote = HTTPRetriever(f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=0.3, max_retries=1, backoff=0.0)
        # a timeout is not retried on the same server (a hung one would make each retry wait as long again)
        with pytest.raises(RetrievalError, match=r"failed after 1 attempt: timed out after 0.3s"):
            remote.search(["x"], topk=1)
    finally:
        sock.close()
