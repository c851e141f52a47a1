"""Dataset specs: name=path pairs, the 7 standard names in a tools/prepare_data.py folder, errors."""

from __future__ import annotations

import shutil

import pytest

from searchr1.data import read_examples, to_search_r1_record
from searchr1.evaluation import STANDARD_DATASETS, load_datasets, resolve_datasets

from .conftest import BAMBOOGLE, DATA, HOTPOTQA, NQ

SAMPLES = {
    "nq": NQ,
    "triviaqa": DATA / "triviaqa_sample" / "questions.jsonl",
    "popqa": DATA / "popqa_sample" / "questions.jsonl",
    "hotpotqa": HOTPOTQA,
    "2wikimultihopqa": DATA / "2wikimultihopqa_sample" / "questions.jsonl",
    "musique": DATA / "musique_sample" / "questions.jsonl",
    "bamboogle": BAMBOOGLE,
}


@pytest.fixture()
def prepared(tmp_path):
    """The layout tools/prepare_data.py writes: <dir>/test/<name>.jsonl for each standard set."""
    for name, path in SAMPLES.items():
        (tmp_path / "test").mkdir(exist_ok=True)
        shutil.copy(path, tmp_path / "test" / f"{name}.jsonl")
    return tmp_path


def test_standard_names_are_the_papers_seven_in_order() -> None:
    assert STANDARD_DATASETS == ("nq", "triviaqa", "popqa", "hotpotqa", "2wikimultihopqa", "musique", "bamboogle")


def test_all_resolves_in_a_prepared_folder(prepared) -> None:
    sets = resolve_datasets(["all"], prepared)
    assert [d.name for d in sets] == list(STANDARD_DATASETS)
    loaded = load_datasets(sets, max_samples=3)
    assert all(len(v) == 3 for v in loaded.values())
    expected = read_examples(str(BAMBOOGLE))[:3]
    assert [(e.id, e.question, e.golden_answers) for e in loaded["bamboogle"]] == [
        (e.id, e.question, e.golden_answers) for e in expected
    ]
    assert {e.data_source for e in loaded["bamboogle"]} == {"bamboogle"}  # the file stem


def test_pairs_and_names_mix(prepared) -> None:
    sets = resolve_datasets(["mine=" + str(HOTPOTQA), "bamboogle"], prepared)
    assert [(d.name, d.path) for d in sets] == [
        ("mine", str(HOTPOTQA)),
        ("bamboogle", str(prepared / "test" / "bamboogle.jsonl")),
    ]
    assert len(load_datasets(sets)["mine"]) == len(read_examples(str(HOTPOTQA)))


def test_merged_test_parquet_is_split_by_data_source(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    nq = read_examples(str(NQ))
    bam = read_examples(str(BAMBOOGLE))
    rows = [
        to_search_r1_record(ex.__class__(ex.id, ex.question, ex.golden_answers, src), "test", i)
        for src, exs in (("nq", nq), ("bamboogle", bam))
        for i, ex in enumerate(exs)
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "test.parquet")
    loaded = load_datasets(resolve_datasets(["bamboogle", "nq"], tmp_path))
    assert [ex.question for ex in loaded["bamboogle"]] == [ex.question for ex in bam]
    assert [ex.golden_answers for ex in loaded["nq"]] == [ex.golden_answers for ex in nq]


def test_errors_say_how_to_fix(tmp_path, prepared) -> None:
    with pytest.raises(FileNotFoundError, match="prepare_data.py --out .* --test-sources popqa"):
        resolve_datasets(["popqa"], tmp_path / "empty")
    with pytest.raises(ValueError, match="one of nq, triviaqa"):
        resolve_datasets(["webq"], prepared)
    with pytest.raises(ValueError, match="--data-dir"):
        resolve_datasets(["nq"], None)
    with pytest.raises(ValueError, match="given twice"):
        resolve_datasets(["nq", "nq=" + str(NQ)], prepared)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_datasets(["x=/no/such.jsonl"])
    with pytest.raises(ValueError, match="name=path"):
        resolve_datasets(["=a.jsonl"])
