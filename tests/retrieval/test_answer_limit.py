"""The answer size is bounded: queries x topk above ``max_results`` is a 413 saying how many queries a part may
hold; at the bound the request is answered."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from searchr1.retrieval import BM25Retriever, create_app
from searchr1.retrieval.server import ServerLimits


def test_answer_over_max_results_is_413_with_how_to_split(hotpot_index: Path) -> None:
    limits = ServerLimits(max_queries=50, max_topk=20, max_results=12)
    with TestClient(create_app(BM25Retriever(index_dir=str(hotpot_index)), limits)) as client:
        resp = client.post("/retrieve", json={"queries": ["Ed Wood"] * 5, "topk": 3})
        assert resp.status_code == 413
        detail = resp.json()["detail"]
        assert "5 queries x topk 3 = 15 passages" in detail and "the limit is 12" in detail
        assert "parts of at most 4 queries" in detail  # 4 x 3 = 12
        ok = client.post("/retrieve", json={"queries": ["Ed Wood"] * 4, "topk": 3})
        assert ok.status_code == 200 and [len(r) for r in ok.json()["result"]] == [3, 3, 3, 3]
        default_topk = client.post("/retrieve", json={"queries": ["Ed Wood"] * 5})  # default topk 3 counts too
        assert default_topk.status_code == 413
