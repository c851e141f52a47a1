"""The search log (Parquet) of an evaluation and its replay: same trajectories, offline; unseen queries named; the
``rag`` method's prompt retrieval; the ``phase`` column."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from searchr1.evaluation import Evaluator, greedy_config
from searchr1.retrieval import Passage, RetrievalError, format_passages
from searchr1.retrieval.search_log import (
    ReplayMissError,
    ReplayRetriever,
    SearchLog,
    SearchRecorder,
    read_search_log,
    search_turns,
)

from .conftest import OracleBackend, gold_lookup

SMALL = dict(max_prompt_tokens=1536, max_total_tokens=2048, max_response_tokens=64, max_obs_tokens=256, topk=2)


def _run(backend, tokenizer, retriever, samples, log):
    evaluator = Evaluator(
        backend, tokenizer, retriever, rollout=greedy_config(**SMALL), batch_size=4, show_progress=False, search_log=log
    )
    return evaluator.run({"hotpotqa": samples["hotpotqa"]})


def test_eval_log_rows_and_replay_gives_identical_results(tokenizer, bm25, samples, tmp_path) -> None:
    backend = OracleBackend(tokenizer, gold_lookup(samples["hotpotqa"]), search_first=True)
    report, results = _run(backend, tokenizer, bm25, samples, tmp_path / "a.parquet")
    rows = read_search_log(tmp_path / "a.parquet")
    # 6 questions, one search each, in 2 batches of 4 and 2
    assert len(rows) == 6 and [r.step for r in rows] == [0, 0, 0, 0, 1, 1]
    first, ex = rows[0], samples["hotpotqa"][0]
    assert first.trajectory == f"hotpotqa/{ex.id}/0" and first.turn == 1 and first.query == ex.question
    truth = bm25.search([ex.question], 2)[0]
    assert first.passage_ids == [p.id for p in truth] and first.titles == [p.title for p in truth]
    assert first.scores == pytest.approx([p.score for p in truth]) and first.topk == 2
    assert first.seconds > 0 and first.server == "BM25Retriever" and first.error is None and first.phase == "eval"

    replay = ReplayRetriever(tmp_path / "a.parquet")
    assert replay.search([ex.question], 2) == [truth]  # same ids, titles, texts, scores, observation text
    again, replayed = _run(backend, tokenizer, replay, samples, tmp_path / "b.parquet")
    assert [asdict(r) for r in replayed] == [asdict(r) for r in results]
    assert again.to_dict()["datasets"] == report.to_dict()["datasets"]
    assert [r.passage_ids for r in read_search_log(tmp_path / "b.parquet")] == [r.passage_ids for r in rows]


def test_replay_names_unseen_queries_and_replays_failures(tmp_path) -> None:
    class Flaky:
        def __init__(self):
            self.fail = False

        def search(self, queries, topk):
            if self.fail:
                raise RetrievalError("server down")
            return [[Passage(f"id-{q}", q.title(), f"about {q}", 1.5)] for q in queries]

    inner = Flaky()
    recorder = SearchRecorder(inner, server="http://x:8000")
    recorder.search(["alpha", "beta"], 1)
    inner.fail = True
    with pytest.raises(RetrievalError):
        recorder.search(["gamma"], 1)
    calls = recorder.take()
    assert set(calls) == {"alpha", "beta", "gamma"} and calls["gamma"].error == "server down"
    assert recorder.take() == {}

    from searchr1.retrieval.search_log import SearchRecord

    def record(query, call):
        ps = call.passages
        return SearchRecord(0, "t", 1, query, 1, [p.id for p in ps], [p.title for p in ps],
                            [f"{p.title_line}\n{p.text}" for p in ps], [p.score for p in ps], call.seconds,
                            "http://x:8000", call.error)  # fmt: skip

    with SearchLog(tmp_path / "log.parquet") as log:
        log.write([record(q, c) for q, c in calls.items()])
    replay = ReplayRetriever(tmp_path / "log.parquet")
    got = replay.search(["beta", "alpha"], 1)
    want = [[Passage("id-beta", "Beta", "about beta", 1.5)], [Passage("id-alpha", "Alpha", "about alpha", 1.5)]]
    assert [[(p.id, p.title, p.text, p.score) for p in ps] for ps in got] == [
        [(p.id, p.title, p.text, p.score) for p in ps] for ps in want
    ]
    assert [format_passages(ps) for ps in got] == [format_passages(ps) for ps in want]  # the policy sees the same
    with pytest.raises(RetrievalError, match="server down"):
        replay.search(["gamma"], 1)
    with pytest.raises(ReplayMissError, match=r"never saw the query 'delta'.*log\.parquet|log\.parquet.*'delta'"):
        replay.search(["alpha", "delta"], 1)
    with pytest.raises(ValueError, match="topk=1; cannot replay topk=3"):
        replay.search(["alpha"], 3)
    with pytest.raises(FileNotFoundError, match="search_log.parquet"):
        ReplayRetriever(tmp_path / "missing.parquet")


def test_search_turns_count_policy_chunks_before_each_observation() -> None:
    chunks = [(0, 3, "policy"), (3, 5, "invalid"), (5, 8, "policy"), (8, 20, "observation"), (20, 22, "policy")]
    chunks += [(22, 30, "observation"), (30, 31, "policy")]
    assert search_turns(chunks) == [2, 3]


def test_unrecorded_searches_are_logged_as_such_and_replay_prefers_the_larger_topk(tmp_path) -> None:
    from searchr1.retrieval.search_log import NOT_RECORDED, SearchCall, search_records
    from searchr1.rollout import Trajectory

    traj = Trajectory(prompt_ids=[1], queries=["seen", "unseen"], chunks=[(0, 1, "policy"), (1, 2, "observation")])
    calls = {"seen": SearchCall([Passage("a", "A", "x", 2.0)], 0.5, 1)}
    rows = search_records(3, [traj], ["t0"], calls, "srv")
    assert [(r.step, r.trajectory, r.turn, r.query, r.passage_ids) for r in rows] == [
        (3, "t0", 1, "seen", ["a"]),
        (3, "t0", 0, "unseen", []),  # no second observation chunk: the trajectory's turn count (0 here)
    ]
    assert rows[1].error == NOT_RECORDED.error
    wider = search_records(4, [traj], ["t1"], {"seen": SearchCall([Passage("a", "A", "x", 2.0)] * 2, 0.1, 2)}, "s")
    with SearchLog(tmp_path / "log.parquet") as log:
        log.write(rows)
        log.write(wider[:1])
    replay = ReplayRetriever(tmp_path / "log.parquet")
    assert len(replay.search(["seen"], 2)[0]) == 2  # the topk=2 answer, logged second
    with pytest.raises(RetrievalError, match="not recorded"):
        replay.search(["unseen"], 1)


def test_rag_retrieval_is_logged_at_turn_0_and_its_replay_gives_the_same_prompts(tokenizer, bm25, samples, tmp_path):
    questions = samples["hotpotqa"][:3]
    runs = []
    for retriever, log in ((bm25, tmp_path / "rag.parquet"), (None, tmp_path / "again.parquet")):
        backend = OracleBackend(tokenizer, gold_lookup(questions))
        evaluator = Evaluator(backend, tokenizer, retriever or ReplayRetriever(tmp_path / "rag.parquet"), "rag",
                              greedy_config(**SMALL), batch_size=2, show_progress=False, search_log=log)  # fmt: skip
        report, results = evaluator.run({"hotpotqa": questions})
        runs.append((backend.prompts, [asdict(r) for r in results], read_search_log(log)))
    (prompts, results, rows), (prompts2, results2, rows2) = runs
    # one row per question (the prompt's retrieval, turn 0), batches of 2 and 1; the policy itself never searches
    assert [(r.step, r.trajectory, r.turn, r.query, r.phase) for r in rows] == [
        (0, f"hotpotqa/{questions[0].id}", 0, questions[0].question, "eval"),
        (0, f"hotpotqa/{questions[1].id}", 0, questions[1].question, "eval"),
        (1, f"hotpotqa/{questions[2].id}", 0, questions[2].question, "eval"),
    ]
    truth = bm25.search([questions[0].question], 2)[0]
    assert rows[0].passage_ids == [p.id for p in truth] and rows[0].topk == 2
    assert prompts2 == prompts and results2 == results  # the replay put the same passages in the same prompts
    assert [r.passage_ids for r in rows2] == [r.passage_ids for r in rows]


def test_phase_column_selective_take_and_logs_from_before_the_phase_column(tmp_path) -> None:
    import pyarrow.parquet as pq

    from searchr1.retrieval.search_log import SearchCall, context_records

    class Echo:
        def search(self, queries, topk):
            return [[Passage(q, q.title(), f"about {q}", 1.0)] for q in queries]

    recorder = SearchRecorder(Echo())
    recorder.search(["a", "b", "c"], 1)
    # a validation rollout takes its own queries only (a query it never searched is not invented)
    assert set(recorder.take(["b", "zz", "b"])) == {"b"} and set(recorder.take()) == {"a", "c"}
    rows = context_records(5, ["a"], ["ds/1"], {"a": SearchCall([Passage("a", "A", "x", 1.0)], 0.1, 1)}, "s", "val")
    assert (rows[0].phase, rows[0].turn, rows[0].passage_ids) == ("val", 0, ["a"])
    with pytest.raises(ValueError, match=r"phase must be one of \('train', 'val', 'eval'\)"):
        context_records(0, ["a"], ["t"], {}, "s", "test")
    with SearchLog(tmp_path / "new.parquet") as log:
        log.write(rows)
    old = pq.read_table(tmp_path / "new.parquet").drop_columns(["phase"])  # as written before the column existed
    pq.write_table(old, tmp_path / "old.parquet")
    assert read_search_log(tmp_path / "new.parquet")[0].phase == "val"
    assert read_search_log(tmp_path / "old.parquet")[0].phase == ""  # unknown, and the rest reads as before
    assert ReplayRetriever(tmp_path / "old.parquet").search(["a"], 1)[0][0].id == "a"
