"""Retrieval server memory around one large ``/retrieve`` request: RSS before, peak during, and after the answer.

Builds a BM25 index over a corpus (default: the shipped synthetic task's), starts ``searchr1 serve`` as a subprocess
(:class:`~searchr1.retrieval.launch.ServerProcess`), then sends QUERIES queries at TOPK (the largest answer the
default ``--max-results`` allows: 16,384 x 4) and reads the server's RSS from ``/proc/<pid>/status`` (VmRSS, and
VmHWM for the peak). Prints one JSON line. Linux only.

    python benchmarks/server_memory.py
    python benchmarks/server_memory.py --queries 16384 --topk 100 --max-results 2000000   # the old unbounded case
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import httpx

from searchr1.resources import package_path
from searchr1.retrieval import BM25Retriever
from searchr1.retrieval.launch import ServerProcess


def rss_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of ``pid`` in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=package_path("pkg:assets/synthetic_task/corpus.jsonl"))
    parser.add_argument("--queries", type=int, default=16_384)
    parser.add_argument("--topk", type=int, default=4)
    parser.add_argument("--max-results", type=int, default=65_536)
    parser.add_argument("--repeats", type=int, default=3, help="large requests sent one after another")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "index"
        BM25Retriever.build(args.corpus, str(index), show_progress=False)
        extra = ["--max-topk", str(max(args.topk, 100)), "--max-results", str(args.max_results)]
        server = ServerProcess(index, extra_args=extra, startup_timeout=300).start()
        try:
            pid = server.proc.pid
            words = ["born", "city", "river", "painter", "year", "school", "Dalur", "Biden"]
            queries = [f"{words[i % 8]} {words[(i * 7) % 8]} {i}" for i in range(args.queries)]
            with httpx.Client(timeout=600) as client:
                client.post(f"{server.url}/retrieve", json={"queries": ["warm up"], "topk": 1})
                time.sleep(1.0)
                before = rss_mb(pid)
                sizes = []
                for _ in range(args.repeats):
                    resp = client.post(f"{server.url}/retrieve", json={"queries": queries, "topk": args.topk})
                    sizes.append(len(resp.content))
                    status = resp.status_code
                    del resp
                time.sleep(2.0)
                after = rss_mb(pid)
        finally:
            server.stop()
    result = {
        "bench": "server_memory",
        "queries": args.queries,
        "topk": args.topk,
        "status": status,
        "answer_mb": round(max(sizes) / 2**20, 1),
        "rss_before_mb": round(before["VmRSS"], 1),
        "rss_peak_mb": round(after["VmHWM"], 1),
        "rss_after_mb": round(after["VmRSS"], 1),
        "after_over_before": round(after["VmRSS"] / before["VmRSS"], 3),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
