"""Load test of the retrieval server: prints ONE JSON line (throughput, latency percentiles, errors, server RSS).

Starts ``searchr1-retrieval serve`` (the production server) on a free loopback port over a BM25 index (default:
built from the HotpotQA sample into a temporary folder), then ``--clients`` threads, each with its own keep-alive
``httpx`` client, send ``--requests-per-client`` requests of ``--batch`` distinct random-word queries each, all at
once (a fixed request count; no new request starts after ``--time-limit`` seconds). One warm-up wave (one request per
client) runs first and is not measured. The server's resident memory is sampled from ``/proc/<pid>/status`` during
the run: ``rss_growth_mb`` (end − after warm-up) is what "memory stays flat" means.

Reported: ``queries_per_s``, ``requests_per_s``, ``p50_ms``/``p99_ms``/``max_ms`` request latency, ``errors`` (a
transport error, a non-200 answer or a wrong-shaped one; target 0), RSS figures, and ``server_vs_inprocess_ratio``:
served queries/s ÷ the same index searched in-process in ``--batch``-query calls, measured in this run.

Usage: ``python benchmarks/load.py`` (64 clients × 512-query batches) or
``python benchmarks/load.py --clients 16 --batch 128 --requests-per-client 2`` (the CI-sized run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import orjson

from searchr1.retrieval import BM25Retriever
from searchr1.retrieval.launch import ServerProcess
from searchr1.testing.procs import rss_bytes

ROOT = Path(__file__).resolve().parents[1]
HOTPOT = ROOT / "tests" / "fixtures" / "hotpotqa_dev_sample"
MB = 1024 * 1024


def make_queries(corpus: Path, count: int, seed: int) -> list[str]:
    """``count`` distinct queries of 2-6 corpus words (all different, so de-duplication cannot help)."""
    words = sorted({w for line in corpus.read_text().splitlines() for w in json.loads(line)["contents"].split()})
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 7, size=count)
    return [" ".join(words[j] for j in rng.integers(0, len(words), size=n)) + f" q{i}" for i, n in enumerate(lengths)]


class RSSSampler(threading.Thread):
    """Samples a process's RSS every ``period_s`` seconds until stopped."""

    def __init__(self, pid: int, period_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.period_s = pid, period_s
        self.samples: list[int] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append(rss_bytes(self.pid))
            self._stop_event.wait(self.period_s)

    def stop(self) -> list[int]:
        self._stop_event.set()
        self.join()
        return self.samples


def client_loop(url: str, bodies: list[bytes], batch: int, timeout: float, deadline: float) -> list[tuple[float, str]]:
    """Send ``bodies`` one after the other on one keep-alive connection; ``(latency_s, error or '')`` per request."""
    out = []
    with httpx.Client(timeout=timeout) as http:
        for body in bodies:
            if time.monotonic() > deadline:
                break
            start = time.perf_counter()
            error = ""
            try:
                resp = http.post(f"{url}/retrieve", content=body, headers={"content-type": "application/json"})
                if resp.status_code != 200:
                    error = f"HTTP {resp.status_code}"
                elif len(orjson.loads(resp.content)["result"]) != batch:
                    error = "wrong number of result lists"
            except (httpx.HTTPError, ValueError, KeyError) as err:
                error = type(err).__name__
            out.append((time.perf_counter() - start, error))
    return out


def run_wave(url: str, per_client: list[list[bytes]], batch: int, timeout: float, deadline: float) -> list:
    """All clients at once; returns every request's ``(latency_s, error)``."""
    with ThreadPoolExecutor(max_workers=len(per_client)) as pool:
        futures = [pool.submit(client_loop, url, bodies, batch, timeout, deadline) for bodies in per_client]
        return [r for f in futures for r in f.result()]


def inprocess_qps(index: Path, queries: list[str], batch: int) -> float:
    """Queries/s of the same index searched in this process in ``batch``-query calls (best of 2 passes)."""
    retriever = BM25Retriever(index_dir=str(index), dedup=False)
    retriever.search(queries[:batch], 3)
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        for i in range(0, len(queries), batch):
            retriever.search(queries[i : i + batch], 3)
        best = min(best, time.perf_counter() - start)
    return len(queries) / best


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--batch", type=int, default=512, help="queries per request")
    parser.add_argument("--requests-per-client", type=int, default=4)
    parser.add_argument("--time-limit", type=float, default=300.0, help="no new request starts after this")
    parser.add_argument("--timeout", type=float, default=120.0, help="client timeout per request (s)")
    parser.add_argument("--index", default=None, help="BM25 index folder (default: HotpotQA sample, built now)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(args.index) if args.index else Path(tmp) / "bm25"
        if not args.index:
            BM25Retriever.build(str(HOTPOT / "corpus.jsonl"), str(index), show_progress=False)
        n_requests = args.clients * (args.requests_per_client + 1)
        queries = make_queries(HOTPOT / "corpus.jsonl", n_requests * args.batch, args.seed)
        bodies = [
            orjson.dumps({"queries": queries[i : i + args.batch], "topk": 3, "return_scores": True})
            for i in range(0, len(queries), args.batch)
        ]
        warm, measured = bodies[: args.clients], bodies[args.clients :]
        per_client = [measured[c :: args.clients] for c in range(args.clients)]
        with ServerProcess(index, extra_args=["--max-queries", str(max(1024, args.batch))]) as server:
            pid = server.proc.pid
            rss_start = rss_bytes(pid)
            warm_results = run_wave(server.url, [[b] for b in warm], args.batch, args.timeout, float("inf"))
            rss_warm = rss_bytes(pid)
            sampler = RSSSampler(pid)
            sampler.start()
            start = time.perf_counter()
            results = run_wave(server.url, per_client, args.batch, args.timeout, time.monotonic() + args.time_limit)
            wall = time.perf_counter() - start
            samples = sampler.stop()
            rss_end = rss_bytes(pid)
            alive = server.proc.poll() is None and httpx.get(f"{server.url}/health").status_code == 200
        ratio_base = inprocess_qps(index, queries[: min(len(queries), 8 * args.batch)], args.batch)
    latencies = sorted(r[0] for r in results)
    errors = [r[1] for r in results if r[1]]
    ok = len(results) - len(errors)
    qps = ok * args.batch / wall
    out = {
        "clients": args.clients,
        "batch": args.batch,
        "requests": len(results),
        "requests_planned": len(measured),
        "errors": len(errors) + sum(1 for r in warm_results if r[1]),
        "error_kinds": sorted(set(errors)),
        "wall_s": round(wall, 3),
        "requests_per_s": round(ok / wall, 2),
        "queries_per_s": round(qps, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1),
        "max_ms": round(1000 * latencies[-1], 1),
        "server_rss_start_mb": round(rss_start / MB, 1),
        "server_rss_after_warmup_mb": round(rss_warm / MB, 1),
        "server_rss_peak_mb": round(max(samples + [rss_end]) / MB, 1),
        "server_rss_end_mb": round(rss_end / MB, 1),
        "rss_growth_mb": round((rss_end - rss_warm) / MB, 1),
        "server_alive_after": alive,
        "inprocess_queries_per_s": round(ratio_base, 1),
        "server_vs_inprocess_ratio": round(qps / ratio_base, 3),
    }
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
