"""The fast paths give the same answers as the straightforward code they replaced: orjson response bytes
vs ``JSONResponse``'s ``json.dumps``, answers spliced from stored lines vs answers encoded from passages,
the raw-ASGI ``/retrieve`` vs the FastAPI route, the direct CSC query matrix vs scipy's COO construction,
the per-row top-k vs a plain sort (ties included), ``json`` fallbacks for what orjson refuses, shared
results for repeated queries, and a lone request that does not sit out the batching window."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from fastapi.testclient import TestClient

from searchr1.retrieval import BM25Retriever, Passage, create_app
from searchr1.retrieval.bm25 import query_matrix, topk_per_row
from searchr1.retrieval.client import dumps, loads
from searchr1.retrieval.corpus import DocStore
from searchr1.retrieval.server import MicroBatcher, ServerLimits, encode_hits, encode_results
from searchr1.retrieval.types import Hits


@pytest.fixture(scope="module")
def retriever(hotpot_index: Path) -> BM25Retriever:
    return BM25Retriever(index_dir=str(hotpot_index))


def _old_body(results: list[list[Passage]], with_scores: bool) -> bytes:
    """What the server sent before: ``JSONResponse`` of per-item dicts."""
    items = [
        [{"document": {"id": p.id, "contents": p.contents}, **({"score": p.score} if with_scores else {})} for p in r]
        for r in results
    ]
    return json.dumps({"result": items}, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


@pytest.mark.parametrize("with_scores", [True, False])
def test_encoded_results_are_the_old_bytes(
    retriever: BM25Retriever, hotpot_questions: list[dict], with_scores: bool
) -> None:
    results = retriever.search([q["question"] for q in hotpot_questions], topk=5)
    odd = Passage.from_contents("x\u2028", '"Tïtle 漢字 🙂"\nline\twith "quotes" \\ and \x01 control', 12.5)
    results.append([odd, Passage("7", "t", "u", score=0.0)])
    assert encode_results(results, with_scores) == _old_body(results, with_scores)
    assert json.loads(encode_results(results, with_scores)) == json.loads(_old_body(results, with_scores))


def test_encoded_extreme_scores_parse_to_the_same_numbers() -> None:
    scores = [1e-05, 1.5e16, -3.25e-300, 1.7976931348623157e308, 0.1 + 0.2, 5e-324]
    results = [[Passage("1", "t", "x", score=s) for s in scores]]
    assert json.loads(encode_results(results, True)) == json.loads(_old_body(results, True))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_score_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="non-finite score"):
        encode_results([[Passage("1", "t", "x", score=bad)]], True)


def test_fast_asgi_path_matches_fastapi_route(retriever: BM25Retriever) -> None:
    limits = ServerLimits(max_queries=50, max_query_chars=200, max_topk=20, max_body_bytes=20_000)
    app, routed_app = create_app(retriever, limits), create_app(retriever, limits)
    routed_app.retrieve_handler = None  # every request through FastAPI's stack and the registered route
    bodies = [
        json.dumps({"queries": ["Ed Wood film", "Scott Derrickson ünïcödé"], "topk": 3, "return_scores": True}),
        json.dumps({"queries": ["Shirley Temple"], "topk": 2, "return_scores": False}),
        json.dumps({"queries": []}),
        "{not json",
        json.dumps({"queries": [""]}),
        json.dumps({"queries": ["x" * 30_000]}),
    ]
    with TestClient(app) as fast, TestClient(routed_app) as routed:
        for body in bodies:
            a = fast.post("/retrieve", content=body, headers={"content-type": "application/json"})
            b = routed.post("/retrieve", content=body, headers={"content-type": "application/json"})
            assert (a.status_code, a.content) == (b.status_code, b.content)
            assert a.headers["content-type"] == b.headers["content-type"] == "application/json"
            assert a.headers["content-length"] == str(len(a.content))
        assert fast.get("/retrieve").status_code == 405  # other methods still go through FastAPI
        assert fast.get("/health").json()["requests"] >= 2


def test_query_matrix_equals_scipy_coo_construction() -> None:
    token_ids = [[3, 1, 3], [], [0], [2, 2, 2, 1]]
    q = query_matrix(token_ids, n_vocab=5)
    assert q.shape == (5, 4) and q.has_canonical_format
    expected = np.zeros((5, 4), dtype=np.float32)
    expected[3, 0], expected[1, 0], expected[0, 2], expected[2, 3], expected[1, 3] = 2, 1, 1, 3, 1
    np.testing.assert_array_equal(q.toarray(), expected)
    rows = [t for c in token_ids for t in c]
    cols = [j for j, c in enumerate(token_ids) for _ in c]
    coo = sp.csc_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(5, 4))
    for attr in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(q, attr), getattr(coo, attr))


def test_doc_store_and_client_fall_back_to_json() -> None:
    lines = [b'{"id": "0", "contents": "\\"T\\"\\nlone \\ud800 surrogate"}\n', b'{"id": "1", "contents": "ok"}\n']
    docs = DocStore(b"".join(lines), np.cumsum([0] + [len(x) for x in lines]))
    assert docs.contents(0) == ("0", '"T"\nlone \ud800 surrogate') and docs.contents(1) == ("1", "ok")
    assert loads(b'{"a": "\\ud800"}') == {"a": "\ud800"}  # a Search-R1 server may send such escapes
    assert dumps({"queries": ["é"], "topk": 3}) == b'{"queries":["\xc3\xa9"],"topk":3}'
    with pytest.raises(UnicodeEncodeError):  # as httpx's json= did
        dumps({"queries": ["\ud800"]})


def test_lone_request_does_not_wait_out_the_window(retriever: BM25Retriever) -> None:
    batcher = MicroBatcher(retriever, window_ms=30_000.0)

    async def one() -> list[Hits]:
        try:
            return await asyncio.wait_for(batcher.search(["Ed Wood film"], 2), timeout=20.0)
        finally:
            await batcher.close()

    start = time.monotonic()
    got = asyncio.run(one())
    assert time.monotonic() - start < 20.0  # the old batcher slept the whole 30 s window
    expected = retriever.search(["Ed Wood film"], 2)[0]
    assert [retriever.docs.contents(r)[0] for r in got[0].rows] == [p.id for p in expected]


@pytest.mark.parametrize("with_scores", [True, False])
def test_answer_from_stored_lines_parses_like_passage_answer(
    retriever: BM25Retriever, hotpot_questions: list[dict], with_scores: bool
) -> None:
    queries = [q["question"] for q in hotpot_questions] + ["Ed Wood film"]
    hits = retriever.search_hits(queries, topk=5)
    body = encode_hits(hits, retriever.docs, with_scores)
    assert json.loads(body) == json.loads(encode_results(retriever.search(queries, topk=5), with_scores))
    assert json.loads(encode_hits([], retriever.docs, with_scores)) == {"result": []}


def test_answer_from_stored_lines_refuses_non_finite_score(retriever: BM25Retriever) -> None:
    with pytest.raises(ValueError, match="non-finite"):
        encode_hits([Hits([0, 1], [1.0, float("nan")])], retriever.docs, True)


def _topk_reference(dense: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
    """Best-first (column, score) per row by a plain sort: score descending, then column ascending; rows
    with fewer than k non-zeros keep only those (no score-0 filler)."""
    out = []
    for row in dense:
        nz = sorted(((-float(v), c) for c, v in enumerate(row) if v != 0))[:k]
        out.append([(c, -v) for v, c in nz])
    return out


@pytest.mark.parametrize("k", [1, 3, 7])
def test_topk_per_row_equals_sort_reference_with_ties(k: int) -> None:
    rng = np.random.default_rng(0)
    dense = rng.choice([0.0, 0.0, 0.0, 1.5, 2.0, 2.0, 3.25], size=(40, 12)).astype(np.float32)  # many ties
    dense[5] = 0.0  # a query without any known word
    dense[6, :] = 2.0  # every column tied
    csr = sp.csr_matrix(dense)
    perm = rng.permutation(csr.indptr[-1])  # scramble column order inside rows: must not matter
    for j in range(csr.shape[0]):
        lo, hi = csr.indptr[j], csr.indptr[j + 1]
        order = lo + np.argsort(perm[lo:hi])
        csr.indices[lo:hi], csr.data[lo:hi] = csr.indices[order], csr.data[order]
    got = [list(zip(h.rows, h.scores)) for h in topk_per_row(csr, k)]
    assert got == _topk_reference(dense, k)
    assert got[6] == [(c, 2.0) for c in range(k)]  # all tied: lowest columns first
    assert got[5] == []  # a query without any known word: no hit


def test_repeats_share_one_result_and_store_reads_match_row_reads(retriever: BM25Retriever) -> None:
    out = retriever.search(["Ed Wood film", "Shirley Temple", "Ed Wood film"], topk=3)
    assert out[0] is out[2] and out[0] != out[1]  # a repeat costs a lookup, not a copy
    hits = retriever.search_hits(["Ed Wood film", "Ed Wood film"], topk=3)
    assert hits[0] is hits[1]
    rows, scores = hits[0].rows, hits[0].scores
    assert retriever.docs.passages(rows, scores) == [retriever.docs.passage(r, s) for r, s in zip(rows, scores)]
    assert [json.loads(x) for x in retriever.docs.lines(rows)] == [
        dict(zip(("id", "contents"), retriever.docs.contents(r))) for r in rows
    ]
