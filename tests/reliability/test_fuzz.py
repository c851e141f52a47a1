"""Hypothesis fuzzing: ``/retrieve`` never answers 5xx (app and real process), the tag parser and the rewards never
raise on any text. Every property sets ``max_examples`` and counts the cases it ran (see the reliability figures).
"""

from __future__ import annotations

import json
import math
from collections import Counter

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from searchr1.protocols import parse_action
from searchr1.retrieval import BM25Retriever
from searchr1.retrieval.launch import ServerProcess
from searchr1.retrieval.server import ServerLimits, create_app
from searchr1.rewards import REWARDS, extract_answer, get_reward, is_valid_structure, normalize_answer

from .conftest import DATA, record_figure

CASES: Counter[str] = Counter()
FUZZ = settings(deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))


def fuzz(max_examples: int) -> settings:
    """The shared fuzz settings with an explicit number of generated cases."""
    return settings(FUZZ, max_examples=max_examples)


OK_STATUSES = {200, 400, 413, 422}
TAGS = ["<search>", "</search>", "<answer>", "</answer>", "<think>", "</think>", "<information>", "</information>"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
retrieve_payloads = st.fixed_dictionaries(
    {"queries": st.lists(st.text(max_size=300) | json_values, max_size=8)},
    optional={"topk": st.integers(-3, 120) | json_values, "return_scores": st.booleans() | json_values},
)
tagged_text = st.lists(st.sampled_from(TAGS) | st.text(max_size=30), max_size=30).map("".join)


@st.composite
def bodies(draw) -> bytes:
    """Request bodies: well-formed-ish payloads, any JSON, raw bytes; with and without ASCII escaping."""
    kind = draw(st.sampled_from(["payload", "json", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=2000))
    value = draw(retrieve_payloads if kind == "payload" else json_values)
    text = json.dumps(value, ensure_ascii=draw(st.booleans()))
    return text.encode("utf-8", "surrogatepass")  # lone surrogates become invalid UTF-8


@pytest.fixture(scope="module", autouse=True)
def report_cases():
    yield
    for name, count in CASES.items():
        record_figure(f"fuzz/{name}", count)
    record_figure("fuzz/total_cases", sum(CASES.values()))


@pytest.fixture(scope="module")
def client():
    app = create_app(BM25Retriever(corpus=str(DATA / "corpus.jsonl")))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def check_answer(resp: httpx.Response, body: bytes) -> None:
    assert resp.status_code in OK_STATUSES, (resp.status_code, resp.text[:300], body[:300])
    if resp.status_code != 200:
        assert isinstance(resp.json()["detail"], str) and resp.json()["detail"]
        return
    payload = json.loads(body)
    result = resp.json()["result"]
    assert len(result) == len(payload["queries"])
    topk = payload.get("topk") or 3
    for row in result:
        assert len(row) <= topk
        assert all(isinstance(item["document"]["contents"], str) for item in row)


def test_retrieve_app_never_5xx(client):
    @fuzz(400)
    @given(body=bodies())
    def prop(body: bytes) -> None:
        CASES["retrieve_app"] += 1
        check_answer(client.post("/retrieve", content=body, headers={"content-type": "application/json"}), body)

    prop()
    assert CASES["retrieve_app"] >= 400


@pytest.mark.parametrize(
    "body,status",
    [
        (b"[" * 100_000, 400),  # json.loads RecursionError (was a 500)
        (b'{"queries": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400),
        (json.dumps({"queries": ["x"] * 16_385}).encode(), 413),
        (json.dumps({"queries": ["q" * 4097]}).encode(), 200),  # cut to max_query_chars and searched
        (json.dumps({"queries": ["q" * (33 * 1024 * 1024)]}).encode(), 413),
        (json.dumps({"queries": ["\ud800 lone surrogate"]}).encode(), 200),  # searched as "? lone surrogate"
        (json.dumps({"queries": ["日本語 🚀 " * 400]}, ensure_ascii=False).encode(), 200),
        (json.dumps({"queries": ["the of and"], "topk": 100}).encode(), 200),  # stopwords only
        (json.dumps({"queries": ["\x00\x01"]}).encode(), 200),
    ],
    ids=[
        "deep-array",
        "deep-queries",
        "16385-queries",
        "long-query",
        "33MiB",
        "surrogate",
        "unicode",
        "stopwords",
        "nul",
    ],
)
def test_retrieve_app_edge_bodies(client, body, status):
    CASES["retrieve_app_edge"] += 1
    resp = client.post("/retrieve", content=body)
    assert resp.status_code == status, resp.text[:300]
    check_answer(resp, body)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_retrieve_real_process_never_5xx(index_dir):
    limits = ServerLimits()
    with ServerProcess(index_dir) as server, httpx.Client(timeout=30) as http:

        @fuzz(60)
        @given(body=bodies())
        def prop(body: bytes) -> None:
            CASES["retrieve_process"] += 1
            check_answer(http.post(f"{server.url}/retrieve", content=body), body)

        prop()
        # oversized bodies, declared and chunked (no content-length): refused, and the server lives on
        big = b'{"queries": ["' + b"a" * (limits.max_body_bytes + 10) + b'"]}'
        assert http.post(f"{server.url}/retrieve", content=big).status_code == 413
        chunks = (big[i : i + 65536] for i in range(0, len(big), 65536))
        assert http.post(f"{server.url}/retrieve", content=chunks).status_code == 413
        assert http.post(f"{server.url}/retrieve", content=b"[" * 100_000).status_code == 400
        assert http.get(f"{server.url}/health").status_code == 200
        assert server.proc.poll() is None
        CASES["retrieve_process"] += 3


@fuzz(1500)
@given(text=st.text() | tagged_text)
def test_parser_never_raises(text):
    CASES["parser"] += 1
    action = parse_action(text)
    assert action.kind in ("search", "answer", "invalid")
    if action.kind != "invalid":
        assert f"<{action.kind}>" in text and action.content == action.content.strip()
    answer = extract_answer(text)
    assert answer is None or "<answer>" in text


@fuzz(1500)
@given(
    response=st.text() | tagged_text,
    golden=st.text() | st.lists(st.text(max_size=40), max_size=4),
    name=st.sampled_from(sorted(REWARDS.names())),
)
def test_rewards_never_raise_and_stay_finite(response, golden, name):
    CASES["rewards"] += 1
    reward = get_reward(name)(response, golden)
    assert isinstance(reward, float) and math.isfinite(reward)
    assert isinstance(is_valid_structure(response), bool)
    assert isinstance(normalize_answer(response), str)
