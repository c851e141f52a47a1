"""Timing helpers of ``benchmarks/retrieval.py``: a fleet of concurrent keep-alive HTTP clients in their own
process, CPU-time splits between processes, and alternated best-of timings of two sides."""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import NamedTuple

from searchr1.retrieval.client import dumps, loads, parse_result


async def _post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, body: bytes) -> bytes:
    """One HTTP/1.1 keep-alive ``POST /retrieve``; the answer body (raises unless 200)."""
    head = b"POST /retrieve HTTP/1.1\r\nhost: %b\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    writer.write(head % (host.encode(), len(body)) + body)
    header = await reader.readuntil(b"\r\n\r\n")
    fields = dict(line.split(b":", 1) for line in header.split(b"\r\n")[1:] if b":" in line)
    length = int({k.strip().lower(): v for k, v in fields.items()}[b"content-length"])
    answer = await reader.readexactly(length)
    if not header.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"server answered {header.splitlines()[0]!r}: {answer[:200]!r}")
    return answer


async def _serve_waves(url: str, chunks: list[list[str]], topk: int, pipe: Connection) -> None:
    """Client process body: open one keep-alive connection per client, then for every ``True`` received run one
    wave and send back ``(independent, one_process)`` seconds; stop on ``None``.

    In a wave every client sends its request at the same moment. ``one_process`` is the wall time until this
    process has received every answer and parsed each into passages (as ``HTTPRetriever`` does), one after the
    other. ``independent`` is what 64 separate trainer processes would see: the latest client's time to
    receive its answer plus the time to parse that answer alone. Answers are parsed only after all are in, so
    one client's parsing never delays another's receiving.
    """
    host, port = url.removeprefix("http://").split(":")
    conns = [await asyncio.open_connection(host, int(port)) for _ in chunks]
    bodies = [dumps({"queries": queries, "topk": topk, "return_scores": True}) for queries in chunks]

    async def one(i: int, body: bytes) -> tuple[bytes, float]:
        try:
            answer = await _post(*conns[i], host, body)
        except (asyncio.IncompleteReadError, ConnectionError):  # the server closed it: idle past its keep-alive
            conns[i][1].close()  # timeout (5 s), which a slow wave on a loaded machine can exceed; reconnect once
            conns[i] = await asyncio.open_connection(host, int(port))
            answer = await _post(*conns[i], host, body)
        return answer, time.perf_counter()

    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, pipe.recv):
        start = time.perf_counter()
        answers = await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
        latency = 0.0
        for (answer, received), queries in zip(answers, chunks):
            parse_start = time.perf_counter()
            result = parse_result(loads(answer), len(queries))
            latency = max(latency, received - start + time.perf_counter() - parse_start)
            if len(result) != len(queries) or any(len(p) > topk for p in result):  # BM25: fewer when fewer match
                raise RuntimeError("a client got a wrong-shaped answer")
        pipe.send((latency, time.perf_counter() - start))
    for _, writer in conns:
        writer.close()


def _client_process(url: str, chunks: list[list[str]], topk: int, pipe: Connection) -> None:
    try:
        import uvloop  # what a production asyncio client would run on; same answers with plain asyncio

        uvloop.run(_serve_waves(url, chunks, topk, pipe))
    except ImportError:
        asyncio.run(_serve_waves(url, chunks, topk, pipe))


class ClientFleet:
    """``len(chunks)`` concurrent keep-alive clients in a separate process (as trainer processes would be), so
    their CPU is not charged to the server's or the benchmark's GIL. ``wave()`` runs one round and returns
    its wall time: every client sends one request at the same moment, the wave ends when all answers are
    parsed into passages.
    """

    def __init__(self, url: str, chunks: list[list[str]], topk: int) -> None:
        ctx = mp.get_context("spawn")
        self._pipe, there = ctx.Pipe()
        self._proc = ctx.Process(target=_client_process, args=(url, chunks, topk, there), daemon=True)
        self._proc.start()
        self.one_process: list[float] = []

    def wave(self) -> float:
        """One wave; returns its independent-clients time and records the one-process time in ``one_process``."""
        self._pipe.send(True)
        while not self._pipe.poll(1.0):
            if not self._proc.is_alive():
                raise RuntimeError(f"the client process died (exit code {self._proc.exitcode})")
        independent, one_process = self._pipe.recv()
        self.one_process.append(one_process)
        return independent

    def close(self) -> None:
        self._pipe.send(None)
        self._proc.join(timeout=30)
        if self._proc.is_alive():
            self._proc.kill()


def cpu_seconds(fn: Callable[..., object], *args: object) -> float:
    """Thread CPU seconds of one ``fn(*args)`` call."""
    start = time.thread_time()
    fn(*args)
    return time.thread_time() - start


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_split(server_pid: int, inprocess: Callable[[], object], remote: Callable[[], object], calls: int) -> dict:
    """CPU milliseconds per call: in-process, and through the server split into the server's process and this
    (client) process. Blind to load from other jobs: where the time goes, not how long it takes."""
    start = time.process_time()
    for _ in range(calls):
        inprocess()
    own = (time.process_time() - start) / calls
    start, server_start = time.process_time(), process_cpu_seconds(server_pid)
    for _ in range(calls):
        remote()
    client = (time.process_time() - start) / calls
    server = (process_cpu_seconds(server_pid) - server_start) / calls
    return {"inprocess_cpu_ms": round(own * 1e3, 2), "server_cpu_ms": round(server * 1e3, 2),
            "client_cpu_ms": round(client * 1e3, 2)}  # fmt: skip


class PairTiming(NamedTuple):
    """Alternated timings of two sides ``a`` and ``b``.

    Attributes:
        a, b: the best time of each side (seconds).
        paired: the median over rounds of ``best a of the round / best b of the round``, i.e. ``b``'s speed
            relative to ``a``'s from neighbouring timings; steadier than ``a / b`` when the machine's speed drifts
            between rounds.
    """

    a: float
    b: float
    paired: float


def best_of_pair(a: Callable[[], object], b: Callable[[], object], repeats: int, block: int = 5) -> PairTiming:
    """Time ``a`` and ``b`` over ``repeats`` calls each, in rounds of one block of ``block`` calls per side (so
    load changes on this shared machine hit both alike), discarding the first call of every block (a call right
    after the other side's big batch runs on cold caches: up to 40 % slower for the cheaper side). A function
    returning a float reports its own time, used instead of the wall time. Each result is freed after its timer
    stops."""
    rounds: list[tuple[float, float]] = []
    for _ in range(max(1, -(-repeats // block))):
        bests = []
        for fn in (a, b):
            best = math.inf
            for i in range(block + 1):
                start = time.perf_counter()
                got = fn()
                elapsed = time.perf_counter() - start
                if i:
                    best = min(best, got if isinstance(got, float) else elapsed)
                del got  # freed outside every timed region
            bests.append(best)
        rounds.append((bests[0], bests[1]))
    ratios = [ta / tb for ta, tb in rounds]
    return PairTiming(min(t for t, _ in rounds), min(t for _, t in rounds), statistics.median(ratios))
