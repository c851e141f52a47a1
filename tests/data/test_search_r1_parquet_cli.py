"""Search-R1's processed parquet trains through ``searchr1 fit --data.train_files=...parquet`` unchanged.

The parquet is written the way Search-R1 a14dc3a ``scripts/data_process/qa_search_train_merge.py`` writes it from
FlashRAG rows: question stripped with a ``?`` added and put in the ``base`` instruction as one user message,
``reward_model.ground_truth.target`` = the golden answers, ``extra_info`` = ``{split, index}``, ``data_source`` and
``ability``; ``datasets.map`` also keeps the original ``id``/``question``/``golden_answers`` columns ("full").
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from searchr1.cli import cli_main
from searchr1.protocols import INSTRUCTION_TEMPLATE, normalize_question


def _search_r1_rows(rows: list[dict], keep_original: bool) -> list[dict]:
    out = []
    for idx, row in enumerate(rows):
        question = row["question"].strip()
        if question[-1] != "?":
            question += "?"
        record = {
            "data_source": "nq",
            "prompt": [{"role": "user", "content": INSTRUCTION_TEMPLATE.format(question=question)}],
            "ability": "fact-reasoning",
            "reward_model": {"style": "rule", "ground_truth": {"target": row["golden_answers"]}},
            "extra_info": {"split": "train", "index": idx},
        }
        out.append({**row, **record} if keep_original else record)
    return out


@pytest.mark.parametrize("keep_original", [False, True], ids=["slim", "full"])
def test_fit_reads_search_r1_parquet(tmp_path: Path, data_dir: Path, keep_original: bool, monkeypatch) -> None:
    source = data_dir / "flashrag_sample" / "nq_test.jsonl"
    rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(_search_r1_rows(rows, keep_original)), path)

    monkeypatch.setattr("sys.argv", ["searchr1"])
    cli = cli_main([f"--data.train_files=[{path}]", f"--trainer.default_root_dir={tmp_path}"], run=False)
    cli.datamodule.setup("fit")
    examples = cli.datamodule.train_stream.examples

    assert len(examples) == len(rows)
    by_question = {normalize_question(e.question): e for e in examples}
    for row in rows:
        example = by_question[normalize_question(row["question"])]
        assert example.golden_answers == row["golden_answers"]
        assert example.data_source == "nq"
    if not keep_original:  # only the prompt text to go on: the question is the one inside the instruction
        assert sorted(e.question for e in examples) == sorted(normalize_question(r["question"]) for r in rows)
