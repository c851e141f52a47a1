"""Readers and validation of QA rows: real samples, every kind of bad row, hub specs and Search-R1 parquet."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from searchr1.data import DataError, DataSource, QAExample, parse_source, read_examples, to_search_r1_record
from searchr1.protocols import instruction, normalize_question

SAMPLES = {
    "hotpotqa_dev_sample/questions.jsonl": 53,
    "flashrag_sample/nq_test.jsonl": 17,
    "bamboogle/questions.jsonl": 125,
    "triviaqa_sample/questions.jsonl": 200,
    "popqa_sample/questions.jsonl": 200,
    "musique_sample/questions.jsonl": 200,
    "2wikimultihopqa_sample/questions.jsonl": 200,
}


def _raw_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize("rel", sorted(SAMPLES))
def test_reads_each_real_sample(data_dir: Path, rel: str) -> None:
    path = data_dir / rel
    examples = read_examples(str(path))
    raw = _raw_rows(path)
    assert len(examples) == len(raw) == SAMPLES[rel]
    for example, row in zip(examples, raw):
        assert example.id == row["id"]
        assert example.question == row["question"]
        assert example.golden_answers == row["golden_answers"]
        # default: the file's stem, or its folder's name for a generic stem such as "questions"
        assert example.data_source == (path.parent.name if path.stem == "questions" else path.stem)
    assert len({e.id for e in examples}) == len(examples)


def test_extra_columns_become_metadata_and_data_source_overrides(data_dir: Path) -> None:
    source = DataSource(str(data_dir / "hotpotqa_dev_sample/questions.jsonl"), data_source="hotpotqa")
    first = read_examples(source)[0]
    assert first.data_source == "hotpotqa"
    assert first.metadata == {
        "type": "comparison",
        "level": "hard",
        "supporting_titles": ["Scott Derrickson", "Ed Wood"],
    }


def test_string_answer_is_wrapped_and_row_data_source_wins(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    rows = [
        {"id": "a", "question": "q1?", "golden_answers": "one"},
        {"id": "a", "question": "q2?", "golden_answers": ["two"], "data_source": "other"},  # same id, other source
        {"question": "q3?", "golden_answers": ["three"]},  # no id: "<data_source>_<row index>"
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    examples = read_examples(str(path))
    assert [(e.id, e.data_source, e.golden_answers) for e in examples] == [
        ("a", "mixed", ["one"]),
        ("a", "other", ["two"]),
        ("mixed_2", "mixed", ["three"]),
    ]


GOOD = '{"id": "g1", "question": "fine?", "golden_answers": ["yes"]}'
BAD_ROWS = {
    "missing question": ('{"id": "b", "golden_answers": ["x"]}', "missing 'question'"),
    "empty question": ('{"id": "b", "question": "  ", "golden_answers": ["x"]}', "'question' is empty"),
    "question not a string": ('{"id": "b", "question": 7, "golden_answers": ["x"]}', "'question' is a int"),
    "missing answers": ('{"id": "b", "question": "q?"}', "missing 'golden_answers'"),
    "empty answers": ('{"id": "b", "question": "q?", "golden_answers": []}', "'golden_answers' is empty"),
    "non-string answer": ('{"id": "b", "question": "q?", "golden_answers": [1999]}', "golden answer 1999 is a int"),
    "blank answer": ('{"id": "b", "question": "q?", "golden_answers": ["x", ""]}', "a golden answer is blank"),
    "answers not a list": ('{"id": "b", "question": "q?", "golden_answers": {"a": 1}}', "is a dict, not a list"),
    "bad id": ('{"id": ["b"], "question": "q?", "golden_answers": ["x"]}', "'id' ['b'] is not"),
    "duplicate id": ('{"id": "g1", "question": "again?", "golden_answers": ["x"]}', "duplicate id 'g1'"),
    "invalid json": ('{"id": "b", "question": ', "invalid JSON"),
    "not an object": ('["q?", ["x"]]', "row is a list, not an object"),
}


@pytest.mark.parametrize("kind", sorted(BAD_ROWS))
def test_bad_jsonl_row_names_file_line_and_fix(tmp_path: Path, kind: str) -> None:
    line, problem = BAD_ROWS[kind]
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{GOOD}\n\n{line}\n{GOOD.replace('g1', 'g2')}\n")  # the bad row is on physical line 3
    with pytest.raises(DataError) as info:
        read_examples(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}:3: ")
    assert problem in message
    assert "Fix: " in message
    assert isinstance(info.value, ValueError)
    if kind == "duplicate id":
        assert f"first at {path}:1" in message


def test_bad_parquet_row_names_row_index(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    rows = [{"id": str(i), "question": f"q{i}?", "golden_answers": ["a"]} for i in range(4)]
    rows[2]["golden_answers"] = []
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(DataError, match=rf"^{path} row 2: 'golden_answers' is empty\. Fix: "):
        read_examples(str(path))


def test_missing_file_lists_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "nq.jsonl"
    with pytest.raises(FileNotFoundError, match="QA data file not found") as info:
        read_examples(str(path))
    assert str(path) in str(info.value)


def test_bad_specs_say_what_to_write() -> None:
    with pytest.raises(DataError, match=r"valid suffixes: \.jsonl, \.parquet"):
        parse_source("data/nq.csv")
    with pytest.raises(DataError, match="hf://<owner>/<repo>/<config>/<split>"):
        parse_source("hf://RUC-NLPIR/FlashRAG_datasets")


def test_hub_spec_calls_load_dataset_and_transforms_rows(monkeypatch, data_dir: Path) -> None:
    path = data_dir / "flashrag_sample/nq_test.jsonl"
    local = datasets.Dataset.from_list(_raw_rows(path))
    calls = []

    def fake_load_dataset(repo, name=None, split=None):
        calls.append((repo, name, split))
        return local

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    from_hub = read_examples("hf://RUC-NLPIR/FlashRAG_datasets/nq/test")
    from_class = read_examples(DataSource("RUC-NLPIR/FlashRAG_datasets", name="nq", split="test"))
    from_both = read_examples(DataSource("hf://RUC-NLPIR/FlashRAG_datasets/nq/test", data_source="nq_open"))
    assert calls == [("RUC-NLPIR/FlashRAG_datasets", "nq", "test")] * 3
    assert {e.data_source for e in from_both} == {"nq_open"}
    assert from_hub == from_class
    assert {e.data_source for e in from_hub} == {"nq"}
    from_file = read_examples(str(path))
    assert [(e.id, e.question, e.golden_answers) for e in from_hub] == [
        (e.id, e.question, e.golden_answers) for e in from_file
    ]

    local_bad = datasets.Dataset.from_list([{"id": "x", "question": "", "golden_answers": ["a"]}])
    monkeypatch.setattr(datasets, "load_dataset", lambda repo, name=None, split=None: local_bad)
    with pytest.raises(DataError, match=r"^hf://RUC-NLPIR/FlashRAG_datasets/nq/test row 0: 'question' is empty"):
        read_examples("hf://RUC-NLPIR/FlashRAG_datasets/nq/test")


def test_search_r1_parquet_round_trip(tmp_path: Path, data_dir: Path) -> None:
    examples = read_examples(DataSource(str(data_dir / "bamboogle/questions.jsonl"), data_source="bamboogle"))[:10]
    records = [to_search_r1_record(ex, "test", i) for i, ex in enumerate(examples)]
    assert records[0]["prompt"] == [{"role": "user", "content": instruction(examples[0].question)}]
    assert records[0]["reward_model"] == {"style": "rule", "ground_truth": {"target": examples[0].golden_answers}}
    assert records[3]["extra_info"] == {"split": "test", "index": 3}

    full = tmp_path / "full.parquet"
    pq.write_table(pa.Table.from_pylist(records), full)
    back = read_examples(str(full))
    assert back == examples  # id, question, answers, data_source all kept
    assert back[3].metadata == {"ability": "fact-reasoning", "extra_info": {"split": "test", "index": 3}}

    # Only Search-R1's own columns: question recovered from the prompt text, answers from reward_model.
    slim = tmp_path / "slim.parquet"
    keep = ("data_source", "prompt", "ability", "reward_model", "extra_info")
    pq.write_table(pa.Table.from_pylist([{k: r[k] for k in keep} for r in records]), slim)
    recovered = read_examples(str(slim))
    assert [e.id for e in recovered] == [f"test_{i}" for i in range(10)]
    assert [e.golden_answers for e in recovered] == [e.golden_answers for e in examples]
    assert [e.data_source for e in recovered] == ["bamboogle"] * 10
    # Search-R1's prompt holds the normalised question (stripped, trailing "?").
    assert [e.question for e in recovered] == [normalize_question(ex.question) for ex in examples]

    # extra_info["question"] wins over the prompt text when present.
    with_q = [{**{k: r[k] for k in keep}, "extra_info": {**r["extra_info"], "question": "raw q"}} for r in records]
    pq.write_table(pa.Table.from_pylist(with_q), slim)
    assert read_examples(str(slim))[0].question == "raw q"


def test_qaexample_is_frozen() -> None:
    example = QAExample("1", "q?", ["a"], "nq")
    with pytest.raises(AttributeError):
        example.question = "other"  # type: ignore[misc]


def test_generic_file_names_take_the_folder_name():
    from searchr1.data import DataSource

    assert DataSource("data/bamboogle/questions.jsonl").default_data_source == "bamboogle"
    assert DataSource("data/search_r1/test/nq.jsonl").default_data_source == "nq"
    assert DataSource("x/test.parquet").default_data_source == "x"
    assert DataSource("x/test.parquet", data_source="nq").default_data_source == "nq"
