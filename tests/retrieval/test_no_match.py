"""A query with no indexed term gets no passage (not score-0 filler), through every path to the policy.

Hand-worked corpus of three passages (stopwords "en", no stemming):

    0: "Alpha"  alpha river city     terms {alpha, river, city}
    1: "Beta"   beta mountain city   terms {beta, mountain, city}
    2: "Gamma"  gamma desert         terms {gamma, desert}

``the of and`` (stopwords only), ``zzqx`` (unknown word), ``東京`` (CJK, not in the vocabulary), ``???`` (no
word at all) and ``""`` hold no indexed term: pyserini answers them with no hit, and so must we. ``river`` is in
passage 0 only: one passage, not topk. ``city`` is in 0 and 1 (same BM25 score, lower row first).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from searchr1.protocols import NO_RESULTS_TEXT, get_protocol, observation
from searchr1.retrieval import BM25Retriever, create_app
from searchr1.retrieval.client import parse_result
from searchr1.retrieval.hybrid import HybridRetriever
from searchr1.rollout import RolloutConfig, RolloutEngine
from searchr1.rollout.backends.scripted import ScriptedBackend
from searchr1.testing import search_then_answer_script

NO_TERM = ["the of and", "zzqx", "東京", "???", ""]
ROWS = [("0", "Alpha", "alpha river city"), ("1", "Beta", "beta mountain city"), ("2", "Gamma", "gamma desert")]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("no_match") / "corpus.jsonl"
    path.write_text("".join(json.dumps({"id": i, "contents": f'"{t}"\n{x}'}) + "\n" for i, t, x in ROWS))
    return path


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from searchr1.models.tiny import ensure_tiny_model

    return AutoTokenizer.from_pretrained(ensure_tiny_model())


@pytest.fixture(scope="module")
def bm25(corpus: Path) -> BM25Retriever:
    return BM25Retriever(corpus=str(corpus), stemmer="none")


def test_bm25_no_indexed_term_gets_no_passage(bm25: BM25Retriever) -> None:
    assert bm25.search(NO_TERM, topk=3) == [[]] * len(NO_TERM)
    assert [h.rows for h in bm25.search_hits(NO_TERM, topk=3)] == [[]] * len(NO_TERM)
    (river,) = bm25.search(["river"], topk=3)
    assert [p.id for p in river] == ["0"] and river[0].score > 0  # one match: one passage, no filler
    (city,) = bm25.search(["the city of"], topk=3)
    assert [p.id for p in city] == ["0", "1"]  # passages 0 and 1 hold "city" (tied): lower row first
    assert city[0].score == pytest.approx(city[1].score)


def test_hybrid_of_bm25_alone_keeps_no_passage(bm25: BM25Retriever, corpus: Path) -> None:
    other = BM25Retriever(corpus=str(corpus), stemmer="none", k1=2.0)
    hybrid = HybridRetriever([bm25, other], depth=3)
    assert hybrid.search(NO_TERM, topk=3) == [[]] * len(NO_TERM)  # RRF of empty rankings is empty
    assert [p.id for p in hybrid.search(["river"], topk=3)[0]] == ["0"]


def test_server_answers_empty_lists_and_the_client_reads_them(bm25: BM25Retriever) -> None:
    with TestClient(create_app(bm25)) as client:
        body = client.post("/retrieve", json={"queries": ["the of and", "river"], "topk": 3, "return_scores": True})
    assert body.status_code == 200
    answer = body.json()
    assert answer["result"][0] == []
    assert [[p.id for p in r] for r in parse_result(answer, 2)] == [[], ["0"]]


def test_engine_shows_the_protocols_no_results_text(bm25: BM25Retriever, tokenizer) -> None:
    script = search_then_answer_script(["the of and", "river"], ["x", "y"], search_turns=1)
    config = RolloutConfig(max_turns=1, max_response_tokens=64, max_obs_tokens=128, topk=3)
    engine = RolloutEngine(ScriptedBackend(script, tokenizer), bm25, tokenizer, config)
    empty, found = engine.generate(["q1", "q2"], n=1).trajectories
    assert empty.doc_ids == [[]] and empty.search_failures == 0
    assert observation(NO_RESULTS_TEXT) in empty.response_text  # "<information>No results found.</information>"
    assert found.doc_ids == [["0"]] and 'Doc 1(Title: "Alpha") alpha river city' in found.response_text
    assert get_protocol("search_r1").no_results_text == NO_RESULTS_TEXT
    assert get_protocol("tool_call").no_results_text  # the tool protocol has its own non-empty text
