"""The client's keep-alive pool against a raw socket server, and the batcher's parts answered one by one."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import pytest

from searchr1.retrieval import BM25Retriever
from searchr1.retrieval.batcher import MicroBatcher, _Pending
from searchr1.retrieval.pool import ConnectionPool, PoolTimeout


class RawServer:
    """A one-thread HTTP/1.1 server on a loopback port that answers ``ok`` with keep-alive headers, then
    closes the connection after ``answers_per_connection`` answers (a server dropping idle keep-alive
    connections), or at once without answering when ``answers_per_connection`` is 0."""

    def __init__(self, answers_per_connection: int) -> None:
        self.answers_per_connection = answers_per_connection
        self.connections = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/prefix"
        self.paths: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn, conn.makefile("rb") as reader:
                for _ in range(self.answers_per_connection):
                    request_line = reader.readline()
                    if not request_line:  # the client closed the connection
                        break
                    length = 0
                    while (line := reader.readline()) not in (b"\r\n", b""):
                        name, _, value = line.partition(b":")
                        length = int(value) if name.strip().lower() == b"content-length" else length
                    reader.read(length)
                    self.paths.append(request_line.split(b" ")[1])
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok")

    def close(self) -> None:
        self._sock.close()


def test_pool_reconnects_once_when_the_server_dropped_an_idle_connection() -> None:
    server = RawServer(answers_per_connection=1)
    pool = ConnectionPool(server.url, timeout=5.0)
    try:
        answers = [pool.request("GET", "/health") for _ in range(3)]
    finally:
        pool.close()
        server.close()
    assert [(a.status, a.body) for a in answers] == [(200, b"ok")] * 3
    assert server.connections == 3, "the 2nd and 3rd requests found their pooled connection closed: one new each"
    assert server.paths == [b"/prefix/health"] * 3


def test_pool_reuses_a_kept_alive_connection() -> None:
    server = RawServer(answers_per_connection=100)
    pool = ConnectionPool(server.url, timeout=5.0)
    try:
        for _ in range(5):
            assert pool.request("POST", "/retrieve", b"{}").body == b"ok"
    finally:
        pool.close()
        server.close()
    assert server.connections == 1


def test_pool_raises_when_a_fresh_connection_fails() -> None:
    server = RawServer(answers_per_connection=0)  # closes every connection without an answer
    pool = ConnectionPool(server.url, timeout=5.0)
    try:
        with pytest.raises((ConnectionError, OSError)):
            pool.request("GET", "/health")
    finally:
        pool.close()
        server.close()
    assert server.connections == 1, "a fresh connection failing is not retried by the pool (the caller retries)"


def test_pool_times_out_when_every_connection_is_busy() -> None:
    server = RawServer(answers_per_connection=100)
    pool = ConnectionPool(server.url, timeout=0.2, max_connections=1)
    pool._slots.acquire()  # the only slot taken, as by a request still running in another thread
    try:
        with pytest.raises(PoolTimeout, match="busy for 0.2s"):
            pool.request("GET", "/health")
    finally:
        pool._slots.release()
        pool.close()
        server.close()


def test_pool_refuses_a_bad_url() -> None:
    with pytest.raises(ValueError, match="http://127.0.0.1:8000"):
        ConnectionPool("127.0.0.1:8000", timeout=1.0)


@pytest.mark.parametrize(
    ("sizes", "part", "expected"),
    [
        ([100, 100, 100], 128, [[100, 100], [100]]),
        ([8] * 64, 256, [[8] * 32, [8] * 32]),
        ([8] * 33, 256, [[8] * 33]),  # a remainder under half a part joins the part before it
        ([200, 10], 128, [[200, 10]]),
        ([600], 256, [[600]]),  # a request is never split
        ([256, 256], 512, [[256, 256]]),
        ([8, 8, 8], 1, [[8], [8], [8]]),  # --part-queries 1: every request searched on its own
    ],
)
def test_batch_parts_are_runs_of_whole_requests(hotpot_index: Path, sizes, part, expected) -> None:
    batcher = MicroBatcher(BM25Retriever(index_dir=str(hotpot_index)), part_queries=part)
    batch = [_Pending(["q"] * n, 3, None) for n in sizes]  # type: ignore[arg-type]
    assert [[len(p.queries) for p in run] for run in batcher._parts(batch)] == expected


def test_batcher_refuses_a_part_below_one_query(hotpot_index: Path) -> None:
    with pytest.raises(ValueError, match="part_queries >= 1"):
        MicroBatcher(BM25Retriever(index_dir=str(hotpot_index)), part_queries=0)


class GatedRetriever(BM25Retriever):
    """Its second ``search_hits`` call waits until ``release`` is set."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.release = threading.Event()
        self.calls = 0

    def search_hits(self, queries, topk):
        self.calls += 1
        if self.calls == 2:
            assert self.release.wait(20.0), "never released"
        return super().search_hits(queries, topk)


def test_first_part_is_answered_while_the_next_part_is_searched(hotpot_index: Path) -> None:
    retriever = GatedRetriever(index_dir=str(hotpot_index))
    batcher = MicroBatcher(retriever, max_batch_queries=1024, window_ms=1000.0, part_queries=2)
    first, second = ["Ed Wood film", "Shirley Temple"], ["Kiss and Tell", "Scott Derrickson"]

    async def run() -> tuple[list, list]:
        try:
            a = asyncio.ensure_future(batcher.search(first, 2))
            b = asyncio.ensure_future(batcher.search(second, 2))
            got_a = await asyncio.wait_for(a, timeout=10.0)
            for _ in range(500):  # the worker thread enters the second part's search and is held there
                if retriever.calls == 2:
                    break
                await asyncio.sleep(0.01)
            assert retriever.calls == 2 and not b.done()
            retriever.release.set()
            return got_a, await asyncio.wait_for(b, timeout=10.0)
        finally:
            await batcher.close()

    got_a, got_b = asyncio.run(run())
    assert (batcher.batches, batcher.search_calls) == (1, 2)
    plain = BM25Retriever(index_dir=str(hotpot_index))
    assert [h.rows for h in got_a] == [h.rows for h in plain.search_hits(first, 2)]
    assert [h.rows for h in got_b] == [h.rows for h in plain.search_hits(second, 2)]
