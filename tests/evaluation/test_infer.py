"""Ask-a-question inference: the streamed turns, queries, retrieved titles and answer."""

from __future__ import annotations

import io

from searchr1.evaluation import Printer, greedy_config, infer
from searchr1.evaluation.cli import run_infer
from searchr1.protocols import normalize_question

from .conftest import HOTPOTQA_CORPUS, OracleBackend

QUESTION = "Were Scott Derrickson and Ed Wood of the same nationality?"


def test_infer_streams_reasoning_queries_titles_and_answer(tokenizer, bm25) -> None:
    stream = io.StringIO()
    backend = OracleBackend(tokenizer, lambda q: "yes", search_first=True)
    result = infer(QUESTION, backend, tokenizer, bm25, greedy_config(topk=3), printer=Printer(stream, color=False))
    out = stream.getvalue()
    titles = [p.title for p in bm25.search([normalize_question(QUESTION)], 3)[0]]
    expected_order = [
        f"[question] {QUESTION}",
        "[turn 1]",
        "<search> " + normalize_question(QUESTION) + " </search>",
        f"[search] {normalize_question(QUESTION)}",
        *[f"[doc {i}] {t}" for i, t in enumerate(titles, start=1)],
        "[turn 2]",
        "<answer> yes </answer>",
        "[answer] yes",
    ]
    positions = [out.index(s) for s in expected_order]
    assert positions == sorted(positions), out
    assert result.answer == "yes" and result.queries == [normalize_question(QUESTION)]
    assert result.finish_reason == "answer" and len(result.doc_ids[0]) == 3


def test_infer_without_an_answer_says_why(tokenizer, bm25) -> None:
    stream = io.StringIO()
    backend = OracleBackend(tokenizer, lambda q: None)
    result = infer(QUESTION, backend, tokenizer, bm25, printer=Printer(stream, color=False))
    assert result.answer is None and "[answer] (none; finished by eos)" in stream.getvalue()


def test_searchr1_infer_cli_with_the_tiny_model(capsys) -> None:
    result = run_infer(
        [QUESTION, "--model", "tiny:micro", "--corpus", str(HOTPOTQA_CORPUS), "--device", "cpu", "--no-color"]
        + ["--max-turns", "1", "--max-response-tokens", "16", "--max-obs-tokens", "64", "--topk", "2"]
    )
    out = capsys.readouterr().out
    assert out.startswith(f"[question] {QUESTION}") and "[turn 1]" in out and "[answer]" in out
    assert result.question == QUESTION and result.finish_reason is not None


def test_infer_streams_a_tool_call_trajectory(tokenizer, bm25) -> None:
    from searchr1.rollout import ScriptedBackend

    call = '<tool_call>\n{"name": "search", "arguments": {"query": "Scott Derrickson"}}\n</tool_call>'
    backend = ScriptedBackend([call, "<answer> yes </answer><|im_end|>"], tokenizer)
    stream = io.StringIO()
    config = greedy_config(topk=2, protocol="tool_call", max_prompt_tokens=900, max_total_tokens=2048)
    result = infer(QUESTION, backend, tokenizer, bm25, config, printer=Printer(stream, color=False))
    out = stream.getvalue()
    positions = [out.index(s) for s in ("[turn 1]", call, "[search] Scott Derrickson", "[doc 1]", "[answer] yes")]
    assert positions == sorted(positions), out
    assert result.queries == ["Scott Derrickson"] and "<tool_response>\nDoc 1(Title: " in result.response_text


def test_infer_says_search_failed_with_the_reason(tokenizer) -> None:
    from searchr1.retrieval import HTTPRetriever
    from searchr1.retrieval.launch import free_port

    stream = io.StringIO()
    dead = HTTPRetriever(f"http://127.0.0.1:{free_port()}", max_retries=0)
    backend = OracleBackend(tokenizer, lambda q: "yes", search_first=True)
    result = infer(QUESTION, backend, tokenizer, dead, greedy_config(topk=3), printer=Printer(stream, color=False))
    out = stream.getvalue()
    # "[search] q" then "[search failed: retrieval server http://127.0.0.1:PORT failed after 1 attempt: ...]"
    assert f"[search failed: retrieval server {dead.url} failed after 1 attempt: cannot reach" in out, out
    assert "Search failed: " in result.response_text and result.doc_ids == [[]]
