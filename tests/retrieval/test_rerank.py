"""RerankRetriever with a tiny randomly initialised cross-encoder built offline (no pretrained reranker weights are
available on these machines): same order as scoring each pair alone, one batched predict per search, served by
``searchr1 serve`` (in-process app) over BM25 and over a paid engine's loopback fake."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from searchr1.errors import UserError
from searchr1.retrieval import BM25Retriever, RerankRetriever, SerperRetriever
from searchr1.retrieval.cli import _serve_parser
from searchr1.retrieval.corpus import iter_corpus
from searchr1.retrieval.rerank import rerank_text
from searchr1.retrieval.serve_options import retriever_from_args
from searchr1.retrieval.server import create_app
from searchr1.testing.fake_engines import FakeSearchEngines


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory, hotpot_corpus: Path) -> Path:
    from searchr1.retrieval.tiny import make_tiny_cross_encoder

    texts = (r.contents for r in itertools.islice(iter_corpus(hotpot_corpus), 100))
    return make_tiny_cross_encoder(tmp_path_factory.mktemp("tiny_ce"), texts, vocab_size=500, max_positions=128)


@pytest.fixture(scope="module")
def bm25(hotpot_corpus: Path) -> BM25Retriever:
    return BM25Retriever(corpus=str(hotpot_corpus))


def test_order_matches_scoring_each_pair_alone(bm25, cross_encoder_dir):
    rr = RerankRetriever(bm25, str(cross_encoder_dir), depth=6, batch_size=4, device="cpu")
    queries = ["Who directed the film?", "Which country is the river in?"]
    before = bm25.metrics()["queries"]
    out = rr.search(queries, 3)
    assert bm25.metrics()["queries"] - before == 2  # depth 6 asked of BM25 once for the batch
    for q, got, candidates in zip(queries, out, bm25.search(queries, 6)):
        alone = [rr.cross_encoder.predict([(q, rerank_text(p))], show_progress_bar=False)[0] for p in candidates]
        best = sorted(range(6), key=lambda i: -alone[i])[:3]
        assert [p.id for p in got] == [candidates[i].id for i in best]
        assert [p.score for p in got] == pytest.approx([float(alone[i]) for i in best], abs=1e-5)


def test_one_batched_predict_per_search(bm25, cross_encoder_dir, monkeypatch):
    rr = RerankRetriever(bm25, str(cross_encoder_dir), depth=5, batch_size=3, device="cpu")
    calls = []
    predict = rr.cross_encoder.predict
    monkeypatch.setattr(
        rr.cross_encoder, "predict", lambda pairs, **kw: calls.append(len(pairs)) or predict(pairs, **kw)
    )
    rr.search(["a film", "a river", "a film"], 2)
    assert calls == [10]  # two distinct queries x depth 5, in one call (the model batches them by 3)


def test_served_over_a_paid_engine(cross_encoder_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SERPER_API_KEY", "k")
    docs = [(f"T{i}", f"text number {i} about rivers and films and many other things") for i in range(8)]
    with FakeSearchEngines(lambda q, k: docs[:k], api_key="k") as fake:
        argv = ["serve", "--engine", "serper", "--base-url", fake.base_url("serper"), "--price-per-query", "0.5"]
        argv += ["--search-cache-dir", str(tmp_path), "--rerank", str(cross_encoder_dir), "--rerank-depth", "8"]
        args = _serve_parser().parse_args(argv + ["--device", "cpu"])
        retriever = retriever_from_args(args, open_index=lambda: pytest.fail("no index was asked for"))
        assert isinstance(retriever, RerankRetriever) and isinstance(retriever.retriever, SerperRetriever)
        client = TestClient(create_app(retriever))
        body = client.post("/retrieve", json={"queries": ["rivers"], "topk": 3, "return_scores": True}).json()
        assert len(body["result"][0]) == 3 and {d["document"]["contents"][:3] for d in body["result"][0]} <= {
            f'"T{i}' for i in range(8)
        }
        assert retriever.spend().cost == 0.5 and fake.answered["serper"] == 1  # 8 results, one paid request
        assert client.get("/health").json()["metrics"]["inner_online_requests"] == 1


def test_serve_needs_an_index_or_an_engine():
    args = _serve_parser().parse_args(["serve"])
    with pytest.raises(UserError, match="either --index"):
        retriever_from_args(args, open_index=lambda: None)
