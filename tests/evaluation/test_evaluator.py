"""The evaluator on real samples (HotpotQA with its corpus, NQ, Bamboogle), driven by scripted policies."""

from __future__ import annotations

import pytest

from searchr1.evaluation import DIRECT_TEMPLATE, Evaluator, greedy_config
from searchr1.protocols import build_prompt, normalize_question
from searchr1.retrieval import format_passages
from searchr1.rewards import em_reward, f1_reward, substring_reward

from .conftest import OracleBackend, gold_lookup

SMALL = dict(max_prompt_tokens=1536, max_total_tokens=2048, max_response_tokens=64, max_obs_tokens=256, topk=2)


class CountingRetriever:
    """Forwards to a real retriever and records every call."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, []

    def search(self, queries, topk):
        self.calls.append((list(queries), topk))
        return self.inner.search(queries, topk)


def _evaluator(backend, tokenizer, retriever, method="search_r1", **kw):
    return Evaluator(
        backend, tokenizer, retriever, method=method, rollout=greedy_config(**SMALL), show_progress=False, **kw
    )


def test_oracle_that_searches_then_answers_gold_scores_one(tokenizer, bm25, samples) -> None:
    retriever = CountingRetriever(bm25)
    backend = OracleBackend(tokenizer, gold_lookup(*samples.values()), search_first=True)
    report, results = _evaluator(backend, tokenizer, retriever, batch_size=4).run(samples)

    assert [r.name for r in report.rows] == ["hotpotqa", "nq", "bamboogle", "average"]
    for row in report.rows:
        assert (row.em, row.f1, row.substring, row.answered) == (1.0, 1.0, 1.0, 1.0)
        assert (row.searches, row.turns) == (1.0, 2.0)
    assert report.average.questions == 18 and len(results) == 18
    assert [r.id for r in results] == [ex.id for exs in samples.values() for ex in exs]
    for r in results:
        # the one query is the question, and its doc ids are what BM25 returns for it
        assert r.queries == [normalize_question(r.question)]
        assert r.doc_ids == [[p.id for p in bm25.search(r.queries, 2)[0]]]
        assert r.finish_reason == "answer" and r.answer == r.golden_answers[0]
        assert "<information>Doc 1(Title:" in r.response_text
    # batch_size=4: each set of 6 is two engine calls, each turn one batched retriever call
    assert all(len(q) <= 4 and k == 2 for q, k in retriever.calls)


def test_dead_retrieval_server_shows_in_the_search_failures_column(tokenizer, samples) -> None:
    from searchr1.retrieval import HTTPRetriever
    from searchr1.retrieval.launch import free_port

    dead = HTTPRetriever(f"http://127.0.0.1:{free_port()}", max_retries=0)
    backend = OracleBackend(tokenizer, gold_lookup(*samples.values()), search_first=True)
    report, results = _evaluator(backend, tokenizer, dead).run({"nq": samples["nq"]})
    assert [(r.searches, r.search_failures) for r in report.rows] == [(1.0, 1.0), (1.0, 1.0)]  # every search failed
    assert all(r.search_failures == 1 and "Search failed: " in r.response_text for r in results)
    assert "search_failures |" in report.to_markdown() and "| 2.00 | 1.000 | 1.000 | " in report.to_markdown()


def test_policy_that_never_answers_scores_zero(tokenizer, bm25, samples) -> None:
    backend = OracleBackend(tokenizer, lambda q: None)
    report, results = _evaluator(backend, tokenizer, bm25).run(samples)
    for row in report.rows:
        assert (row.em, row.f1, row.substring, row.answered, row.searches) == (0.0, 0.0, 0.0, 0.0, 0.0)
    assert {r.finish_reason for r in results} == {"eos"}
    assert all(r.answer is None for r in results)


def test_scores_agree_with_rewards(tokenizer, bm25, samples) -> None:
    """Mixed answers (gold, gold + extra words, wrong): every score is the reward of the response text."""
    gold = gold_lookup(*samples.values())
    order = {normalize_question(ex.question): i for exs in samples.values() for i, ex in enumerate(exs)}

    def answer(q: str) -> str:
        i = order[normalize_question(q)]
        return [gold(q), f"{gold(q)} and more", "Paris"][i % 3]

    report, results = _evaluator(OracleBackend(tokenizer, answer), tokenizer, bm25).run(samples)
    for r in results:
        assert r.em == em_reward(r.response_text, r.golden_answers)
        assert r.f1 == f1_reward(r.response_text, r.golden_answers)
        assert r.substring == substring_reward(r.response_text, r.golden_answers)
    for row in report.datasets:
        mine = [r for r in results if r.dataset == row.name]
        assert row.em == pytest.approx(sum(r.em for r in mine) / len(mine))
        assert row.f1 == pytest.approx(sum(r.f1 for r in mine) / len(mine))
        assert row.substring == pytest.approx(sum(r.substring for r in mine) / len(mine))
    # gold, gold+extra, wrong for i = 0..5 → EM 2/6 (no golden answer here contains "Paris")
    assert [row.em for row in report.datasets] == pytest.approx([1 / 3] * 3)
    assert [row.substring for row in report.datasets] == pytest.approx([2 / 3] * 3)
    assert report.average.em == pytest.approx(sum(row.em for row in report.datasets) / 3)


def test_direct_baseline_never_searches(tokenizer, samples) -> None:
    """Direct answer: its own prompt, one turn; a policy that tries to search is stopped with no answer."""
    backend = OracleBackend(tokenizer, lambda q: None, search_always=True)
    report, results = _evaluator(backend, tokenizer, None, method="direct").run({"nq": samples["nq"]})
    assert report.datasets[0].searches == 0.0 and report.datasets[0].em == 0.0
    assert all(r.num_turns == 1 and r.num_searches == 0 and r.finish_reason == "max_turns" for r in results)
    assert all("<information>" not in r.response_text for r in results)
    question = samples["nq"][0].question
    expected = DIRECT_TEMPLATE.format(question=normalize_question(question))
    assert expected in backend.prompts[0] and "search engine" not in backend.prompts[0]

    answering = OracleBackend(tokenizer, gold_lookup(samples["nq"]))
    report, _ = _evaluator(answering, tokenizer, None, method="direct").run({"nq": samples["nq"]})
    assert report.average.em == 1.0 and report.average.turns == 1.0


def test_rag_baseline_puts_topk_passages_in_the_prompt(tokenizer, bm25, samples) -> None:
    retriever = CountingRetriever(bm25)
    backend = OracleBackend(tokenizer, gold_lookup(samples["hotpotqa"]), search_always=True)
    examples = samples["hotpotqa"][:3]
    report, results = _evaluator(backend, tokenizer, retriever, method="rag").run({"hotpotqa": examples})
    # one retrieval for the prompts (the raw questions); the policy's own search is never executed
    assert retriever.calls == [([ex.question for ex in examples], 2)]
    for ex, r, prompt in zip(examples, results, backend.prompts):
        passages = bm25.search([ex.question], 2)[0]
        assert format_passages(passages) in prompt
        assert r.context_doc_ids == [p.id for p in passages]
        assert r.num_searches == 0 and r.num_turns == 1
    assert report.datasets[0].searches == 1.0  # the prompt's retrieval counts as one search


def test_search_r1_prompt_is_the_training_prompt(tokenizer, bm25, samples) -> None:
    backend = OracleBackend(tokenizer, gold_lookup(samples["nq"]))
    _evaluator(backend, tokenizer, bm25).run({"nq": samples["nq"][:1]})
    assert backend.prompts[0] == build_prompt(samples["nq"][0].question, tokenizer)


def test_num_samples_scores_every_trajectory(tokenizer, bm25, samples) -> None:
    backend = OracleBackend(tokenizer, gold_lookup(samples["nq"]))
    report, results = _evaluator(backend, tokenizer, bm25, num_samples=3).run({"nq": samples["nq"][:2]})
    assert [(r.id, r.sample) for r in results] == [(i, s) for i in ("test_0", "test_1") for s in range(3)]
    assert report.datasets[0].questions == 2 and report.datasets[0].samples == 6


def test_configuration_errors_are_explained(tokenizer) -> None:
    backend = OracleBackend(tokenizer, lambda q: None)
    with pytest.raises(ValueError, match="needs a retriever"):
        Evaluator(backend, tokenizer, None, method="rag")
    with pytest.raises(ValueError, match="valid names: direct, rag, search_r1"):
        Evaluator(backend, tokenizer, None, method="cot")
    with pytest.raises(ValueError, match="at least one question"):
        Evaluator(backend, tokenizer, None, method="direct", show_progress=False).run({"nq": []})
