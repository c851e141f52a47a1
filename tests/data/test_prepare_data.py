"""tools/prepare_data.py: hub rows → validated local JSONL / Search-R1 parquet (hub replaced by local samples)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import datasets
import pytest

from searchr1.data import EVAL_SPLITS, DataError, QADataModule, read_examples

TOOL = Path(__file__).resolve().parents[2] / "tools" / "prepare_data.py"
SAMPLE_FILES = {
    "nq": "flashrag_sample/nq_test.jsonl",
    "triviaqa": "triviaqa_sample/questions.jsonl",
    "popqa": "popqa_sample/questions.jsonl",
    "hotpotqa": "hotpotqa_dev_sample/questions.jsonl",
    "2wikimultihopqa": "2wikimultihopqa_sample/questions.jsonl",
    "musique": "musique_sample/questions.jsonl",
    "bamboogle": "bamboogle/questions.jsonl",
}


def _load_tool():
    spec = importlib.util.spec_from_file_location("prepare_data", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture
def fake_hub(monkeypatch, data_dir: Path) -> list[tuple[str, str, str]]:
    """``datasets.load_dataset`` answering from tests/fixtures (every split of a config gets its sample)."""
    calls: list[tuple[str, str, str]] = []

    def load_dataset(repo, name=None, split=None):
        calls.append((repo, name, split))
        return datasets.Dataset.from_list(_rows(data_dir / SAMPLE_FILES[name]))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_eval_splits_follow_search_r1() -> None:
    assert EVAL_SPLITS == {
        "nq": "test",
        "triviaqa": "test",
        "popqa": "test",
        "hotpotqa": "dev",
        "2wikimultihopqa": "dev",
        "musique": "dev",
        "bamboogle": "test",
    }


def test_prepare_writes_train_mix_and_seven_test_sets(tmp_path: Path, fake_hub, data_dir: Path) -> None:
    tool = _load_tool()
    written = tool.main(["--out", str(tmp_path)])
    repo = "RUC-NLPIR/FlashRAG_datasets"
    assert fake_hub == [(repo, "nq", "train"), (repo, "hotpotqa", "train")] + [
        (repo, name, split) for name, split in EVAL_SPLITS.items()
    ]
    assert tmp_path / "train.parquet" in written and tmp_path / "test.parquet" in written

    train = read_examples(str(tmp_path / "train.jsonl"))
    assert [e.data_source for e in train] == ["nq"] * 17 + ["hotpotqa"] * 53
    assert read_examples(str(tmp_path / "train.parquet")) == train
    for name, rel in SAMPLE_FILES.items():
        examples = read_examples(str(tmp_path / "test" / f"{name}.jsonl"))
        raw = _rows(data_dir / rel)
        assert [(e.id, e.question, e.golden_answers, e.data_source) for e in examples] == [
            (r["id"], r["question"], r["golden_answers"], name) for r in raw
        ]

    dm = QADataModule(
        train_files=[str(tmp_path / "train.jsonl")], val_files=[str(tmp_path / "test.parquet")], batch_size=8
    )
    dm.setup("fit")
    assert dm.val_sources == list(EVAL_SPLITS)
    assert sum(len(rows) for rows in dm.val_sets.values()) == 17 + 200 + 200 + 53 + 200 + 200 + 125


def test_prepare_subset_and_formats(tmp_path: Path, fake_hub) -> None:
    tool = _load_tool()
    tool.main(
        [
            "--out",
            str(tmp_path),
            "--train-sources",
            "",
            "--test-sources",
            "bamboogle",
            "--subset",
            "10",
            "--format",
            "jsonl",
        ]
    )
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.*")) == ["test/bamboogle.jsonl"]
    subset = read_examples(str(tmp_path / "test" / "bamboogle.jsonl"))
    assert len(subset) == 10 and len({e.id for e in subset}) == 10


def test_prepare_rejects_bad_hub_rows(monkeypatch, tmp_path: Path) -> None:
    tool = _load_tool()
    bad = datasets.Dataset.from_list([{"id": "0", "question": "q?", "golden_answers": []}])
    monkeypatch.setattr(datasets, "load_dataset", lambda repo, name=None, split=None: bad)
    with pytest.raises(DataError, match=r"hf://RUC-NLPIR/FlashRAG_datasets/nq/test row 0: 'golden_answers' is empty"):
        tool.main(["--out", str(tmp_path), "--train-sources", "", "--test-sources", "nq"])
    with pytest.raises(ValueError, match="valid names: nq, triviaqa"):
        tool.prepare(tmp_path, train_sources=(), test_sources=("webq",))


def test_help_documents_the_tool(capsys) -> None:
    with pytest.raises(SystemExit):
        _load_tool().main(["--help"])
    out = capsys.readouterr().out
    assert "hotpotqa/dev" in out and "--subset" in out
