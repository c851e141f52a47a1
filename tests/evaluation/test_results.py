"""Score aggregation and the written files, with hand-computed numbers."""

from __future__ import annotations

import csv
import json

import pytest

from searchr1.evaluation import DatasetScores, EvalReport, QuestionResult, comparison_markdown, write_report


def _result(dataset: str, qid: str, em: float, searches: int = 0, turns: int = 1, answer: str | None = "x", **kw):
    return QuestionResult(
        dataset=dataset,
        id=qid,
        question=f"q {qid}?",
        golden_answers=["x"],
        sample=0,
        response_text=f"<answer> {answer} </answer>",
        answer=answer,
        em=em,
        f1=kw.pop("f1", em),
        substring=kw.pop("substring", em),
        num_searches=searches,
        num_turns=turns,
        **kw,
    )


RESULTS = [
    _result("nq", "a", 1.0, searches=2, turns=3, response_tokens=10),
    _result("nq", "b", 0.0, searches=0, turns=1, answer=None, f1=0.0, response_tokens=20),
    _result("nq", "c", 0.0, searches=1, turns=2, f1=0.5, response_tokens=30),
    _result("nq", "d", 1.0, searches=1, turns=2, response_tokens=40),
    _result("bamboogle", "e", 1.0, context_doc_ids=["7", "9"], response_tokens=5),
]


def test_dataset_rows_and_macro_average_by_hand() -> None:
    report = EvalReport.from_results("search_r1", "m", RESULTS)
    nq, bam = report.datasets
    # nq: EM (1+0+0+1)/4 = 0.5, F1 (1+0+0.5+1)/4 = 0.625, searches 4/4 = 1, turns 8/4 = 2, answered 3/4
    assert (nq.name, nq.questions, nq.samples) == ("nq", 4, 4)
    assert (nq.em, nq.f1, nq.searches, nq.turns, nq.answered, nq.response_tokens) == (0.5, 0.625, 1.0, 2.0, 0.75, 25.0)
    # bamboogle: the RAG prompt retrieval counts as one search
    assert (bam.em, bam.searches, bam.turns) == (1.0, 1.0, 1.0)
    # macro average (paper's Avg.): (0.5 + 1.0) / 2 = 0.75, not the per-question 3/5
    avg = report.average
    assert (avg.name, avg.questions, avg.em, avg.f1, avg.searches) == ("average", 5, 0.75, 0.8125, 1.0)
    assert [r.name for r in report.rows] == ["nq", "bamboogle", "average"]


def test_markdown_csv_json_and_jsonl_files(tmp_path) -> None:
    report = EvalReport.from_results("rag", "model-x", RESULTS, {"seed": 3})
    paths = write_report(report, RESULTS, tmp_path / "out")
    md = paths["markdown"].read_text()
    assert "| nq | 4 | 0.500 | 0.625 | 0.500 | 1.00 | 2.00 | 0.750 |" in md
    assert "| **average** | 5 | 0.750 |" in md and "rag — model-x" in md
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [r["dataset"] for r in rows] == ["nq", "bamboogle", "average"]
    assert float(rows[0]["em"]) == 0.5 and float(rows[2]["em"]) == 0.75 and rows[0]["method"] == "rag"
    data = json.loads(paths["json"].read_text())
    assert data["average"]["em"] == 0.75 and data["settings"] == {"seed": 3}
    assert [d["name"] for d in data["datasets"]] == ["nq", "bamboogle"]
    lines = [json.loads(line) for line in paths["trajectories"].read_text().splitlines()]
    assert [line["id"] for line in lines] == ["a", "b", "c", "d", "e"]
    assert lines[4]["context_doc_ids"] == ["7", "9"] and lines[1]["answer"] is None


def test_comparison_table_has_one_row_per_method() -> None:
    a = EvalReport.from_results("search_r1", "m", RESULTS)
    b = EvalReport.from_results("direct", "m", [r for r in RESULTS if r.dataset == "nq"])
    table = comparison_markdown([a, b])
    lines = table.splitlines()
    assert lines[0] == "| method | nq | bamboogle | avg |"
    assert lines[2] == "| search_r1 | 0.500 | 1.000 | 0.750 |"
    assert lines[3] == "| direct | 0.500 | – | 0.500 |"
    with pytest.raises(ValueError, match="valid"):
        comparison_markdown([a], metric="accuracy")


def test_empty_inputs_are_rejected() -> None:
    with pytest.raises(ValueError):
        DatasetScores.from_results("nq", [])
    with pytest.raises(ValueError):
        DatasetScores.macro_average([])


def test_search_failures_column_by_hand(tmp_path) -> None:
    # nq: 2 + 2 searches, 1 + 2 failed -> 3/4 = 0.75; hq: 1 search, none failed -> 0; average (0.75 + 0) / 2
    results = [
        _result("nq", "a", 0.0, searches=2, search_failures=1),
        _result("nq", "b", 0.0, searches=2, search_failures=2),
        _result("hq", "c", 1.0, searches=1),
        _result("hq", "d", 1.0, searches=0),
    ]
    report = EvalReport.from_results("search_r1", "m", results)
    assert [r.search_failures for r in report.rows] == [0.75, 0.0, 0.375]
    paths = write_report(report, results, tmp_path / "out")
    md = paths["markdown"].read_text()
    assert "| answered | search_failures |" in md
    assert "| nq | 2 | 0.000 | 0.000 | 0.000 | 2.00 | 1.00 | 1.000 | 0.750 |" in md
    assert float(list(csv.DictReader(paths["csv"].open()))[0]["search_failures"]) == 0.75


def test_search_quality_columns_per_dataset(tmp_path) -> None:
    from searchr1.rewards.search_quality import SearchQuality

    def q(outcome: str, retrieved: bool, recall: float | None) -> SearchQuality:
        return SearchQuality(outcome, retrieved, 1, recall, 0, 2.0, 3, 0.0, 5.0)

    rows = [
        _result("nq", "a", 1.0, quality=q("correct", True, 1.0)),
        _result("nq", "b", 0.0, quality=q("misread", True, 0.5)),
        _result("nq", "c", 0.0, quality=q("not_retrieved", False, 0.0)),
        _result("nq", "d", 0.0, quality=q("never_searched", False, None)),
        _result("hq", "e", 0.0, quality=q("never_searched", False, None)),
    ]
    report = EvalReport.from_results("search_r1", "m", rows)
    nq, hq = report.datasets
    # nq: answer retrieved in a, b -> 0.5; one of each outcome -> 0.25 each; recall over a, b, c: 1.5 / 3 = 0.5
    assert (nq.answer_in_retrieved, nq.failure_never_searched, nq.failure_not_retrieved, nq.failure_misread) == (
        0.5,
        0.25,
        0.25,
        0.25,
    )
    assert nq.em + nq.failure_never_searched + nq.failure_not_retrieved + nq.failure_misread == 1.0
    assert (nq.gold_recall, hq.gold_recall, hq.failure_never_searched) == (0.5, None, 1.0)
    # the average: recall only from the set that has one; never searched (0.25 + 1.0) / 2
    assert (report.average.gold_recall, report.average.failure_never_searched) == (0.5, 0.625)
    md = report.to_markdown()
    assert "| answer retrieved | never searched | not retrieved | misread | gold recall |" in md
    assert "| hq | 1 | 0.000 |" in md and "| 0.000 | 1.000 | 0.000 | 0.000 | – |" in md
    paths = write_report(report, rows, tmp_path)
    assert json.loads(paths["json"].read_text())["datasets"][0]["failure_misread"] == 0.25
    line = json.loads(paths["trajectories"].read_text().splitlines()[1])
    assert line["quality"]["outcome"] == "misread"
    assert list(csv.DictReader(paths["csv"].open()))[1]["gold_recall"] == ""
