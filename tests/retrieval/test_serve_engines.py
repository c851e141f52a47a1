"""``searchr1 serve --engine E`` for each paid engine (issue 32: "serve can serve each"): the options ``serve`` parses
build that engine's retriever, and the server answers ``/retrieve`` with the engine's results, paid once and then
read from the disk cache. Loopback fakes (``searchr1.testing.fake_engines``); no test reaches the internet."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from searchr1.retrieval import GoogleCSERetriever, SerpAPIRetriever, SerperRetriever
from searchr1.retrieval.cli import _serve_parser, check_serve_args, check_topk_fits
from searchr1.retrieval.serve_options import retriever_from_args
from searchr1.retrieval.server import ServerLimits, create_app
from searchr1.testing.fake_engines import FakeSearchEngines

DOCS = [(f"T{i}", f"text number {i} about rivers and films") for i in range(8)]
CLASSES = {"serpapi": SerpAPIRetriever, "serper": SerperRetriever, "google_cse": GoogleCSERetriever}


@pytest.mark.parametrize("engine", sorted(CLASSES))
def test_serve_serves_each_paid_engine(engine, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_SEARCH_KEY", "k")
    with FakeSearchEngines(lambda q, k: DOCS[:k], api_key="k", cx="cx-1") as fake:
        argv = ["serve", "--engine", engine, "--base-url", fake.base_url(engine), "--api-key-env", "TEST_SEARCH_KEY"]
        argv += ["--cx", "cx-1", "--price-per-query", "0.5", "--search-cache-dir", str(tmp_path), "--topk", "50"]
        args = _serve_parser().parse_args(argv)
        check_serve_args(args)
        retriever = retriever_from_args(args, open_index=lambda: pytest.fail("no index was asked for"))
        assert type(retriever) is CLASSES[engine]
        check_topk_fits(args.topk, retriever)  # an engine has no passage count: no refusal
        client = TestClient(create_app(retriever, ServerLimits(default_topk=2)))
        for _ in range(2):  # the second answer comes from the disk cache
            body = client.post("/retrieve", json={"queries": ["rivers"], "topk": 2, "return_scores": True}).json()
            assert [d["document"]["contents"].split("\n")[0] for d in body["result"][0]] == ['"T0"', '"T1"']
        assert fake.answered[engine] == 1 and retriever.spend().cost == 0.5
