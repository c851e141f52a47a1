"""Fetch Search-R1's QA data (FlashRAG benchmarks on the Hugging Face hub) into local, validated files.

Search-R1 trains on the ``train`` splits of NQ + HotpotQA (``scripts/data_process/qa_search_train_merge.py``) and
evaluates on 7 sets (``qa_search_test_merge.py``), taking ``test`` where FlashRAG has one and ``dev`` otherwise:
nq/test, triviaqa/test, popqa/test, hotpotqa/dev, 2wikimultihopqa/dev, musique/dev, bamboogle/test. This tool
loads those from ``RUC-NLPIR/FlashRAG_datasets``, validates every row (``searchr1.data.qa``) and writes::

    <out>/train.jsonl             the train mix, FlashRAG rows plus ``data_source``
    <out>/train.parquet           the same rows in Search-R1's processed schema (prompt / reward_model / extra_info)
    <out>/test/<name>.jsonl       one file per evaluation set (file stem = data_source)
    <out>/test.parquet            all evaluation sets merged, Search-R1 schema (split by data_source when read)

Point ``QADataModule(train_files=[<out>/train.jsonl], val_files=[<out>/test/nq.jsonl, ...])`` at the output.
Needs network access to the hub; ``HF_DATASETS_OFFLINE=1`` with a filled cache works too, and so does ``--repo``
pointing at a local copy of the FlashRAG_datasets repository. Without either it stops with one line saying so.

Example::

    python tools/prepare_data.py --out data/search_r1
    python tools/prepare_data.py --out data/small --test-sources nq,bamboogle --subset 1000 --format jsonl
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from searchr1.data.qa import (
    EVAL_SPLITS,
    FLASHRAG_REPO,
    TRAIN_SOURCES,
    QAExample,
    check_unique_ids,
    make_example,
    to_flashrag_record,
    to_search_r1_record,
)

FORMATS = ("jsonl", "parquet")


def convert_rows(rows: Iterable[dict[str, Any]], data_source: str, where: str) -> list[QAExample]:
    """Validate hub rows (FlashRAG columns) into examples of ``data_source``.

    Args:
        rows: rows with ``id``, ``question``, ``golden_answers`` (extra columns become metadata).
        data_source: benchmark name stamped on every row (as Search-R1 does).
        where: location prefix for error messages, e.g. ``"hf://RUC-NLPIR/FlashRAG_datasets/nq/test"``.
    """
    located = [
        (
            make_example({**dict(row), "data_source": data_source}, data_source, f"{where} row {i}", i),
            f"{where} row {i}",
        )
        for i, row in enumerate(rows)
    ]
    check_unique_ids(located)
    return [example for example, _ in located]


def search_r1_records(examples: Sequence[QAExample], split: str) -> list[dict[str, Any]]:
    """Search-R1 parquet rows; ``extra_info.index`` restarts at 0 for each data source (its per-dataset ``map``)."""
    counters: dict[str, int] = {}
    records = []
    for example in examples:
        index = counters.get(example.data_source, 0)
        counters[example.data_source] = index + 1
        records.append(to_search_r1_record(example, split, index))
    return records


def write_jsonl(examples: Iterable[QAExample], path: Path) -> None:
    """Write FlashRAG JSONL rows (with ``data_source``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for example in examples:
            f.write(json.dumps(to_flashrag_record(example), ensure_ascii=False) + "\n")


def write_parquet(records: list[dict[str, Any]], path: Path) -> None:
    """Write rows (e.g. :func:`search_r1_records`) as one parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records), path)


def load_hub_split(name: str, split: str, repo: str = FLASHRAG_REPO, subset: int | None = None) -> list[QAExample]:
    """Load ``repo``/``name`` ``split`` from the hub and validate it.

    Args:
        name: dataset config (``"nq"``).
        split: ``"train"``, ``"dev"`` or ``"test"``.
        repo: hub dataset repository.
        subset: keep a random ``subset`` rows (Search-R1's ``--make_subset``: ``shuffle(seed=42).select``).
    """
    import datasets

    try:
        dataset = datasets.load_dataset(repo, name, split=split)
    except Exception as err:
        if not _unreachable(err):
            raise
        raise HubUnavailable(
            f"could not load {repo}/{name} ({split}): {type(err).__name__}. This tool downloads from the Hugging Face "
            "hub; without network access point --repo at a local copy of the FlashRAG_datasets repository (its "
            f"<name>/<split>.jsonl files, e.g. {name}/{split}.jsonl), or set HF_DATASETS_OFFLINE=1 with a filled cache"
        ) from err
    if subset is not None and len(dataset) > subset:
        dataset = dataset.shuffle(seed=42).select(range(subset))
    return convert_rows(dataset, name, f"hf://{repo}/{name}/{split}")


class HubUnavailable(RuntimeError):
    """The dataset repository could not be reached (no network, hub down, or a wrong local ``--repo`` folder)."""


def _unreachable(err: BaseException) -> bool:
    """True for the errors of a hub (or local copy) that cannot be reached: connection, timeout, offline cache miss."""
    names = {type(e).__name__ for e in (err, err.__cause__, err.__context__) if e is not None}
    markers = ("Connect", "Timeout", "Offline", "LocalEntryNotFound", "NameResolution")
    return isinstance(err, (ConnectionError, TimeoutError)) or any(m in n for n in names for m in markers)


def prepare(
    out: Path,
    train_sources: Sequence[str] = TRAIN_SOURCES,
    test_sources: Sequence[str] = tuple(EVAL_SPLITS),
    formats: Sequence[str] = FORMATS,
    subset: int | None = None,
    repo: str = FLASHRAG_REPO,
) -> list[Path]:
    """Fetch, validate and write the train mix and evaluation sets; returns the written paths."""
    unknown = [s for s in test_sources if s not in EVAL_SPLITS]
    if unknown:
        raise ValueError(f"unknown evaluation sets {unknown}; valid names: {', '.join(EVAL_SPLITS)}")
    written: list[Path] = []
    if train_sources:
        train = [ex for name in train_sources for ex in load_hub_split(name, "train", repo)]
        if "jsonl" in formats:
            write_jsonl(train, out / "train.jsonl")
            written.append(out / "train.jsonl")
        if "parquet" in formats:
            write_parquet(search_r1_records(train, "train"), out / "train.parquet")
            written.append(out / "train.parquet")
    merged: list[QAExample] = []
    for name in test_sources:
        examples = load_hub_split(name, EVAL_SPLITS[name], repo, subset)
        merged.extend(examples)
        if "jsonl" in formats:
            write_jsonl(examples, out / "test" / f"{name}.jsonl")
            written.append(out / "test" / f"{name}.jsonl")
    if merged and "parquet" in formats:
        write_parquet(search_r1_records(merged, "test"), out / "test.parquet")
        written.append(out / "test.parquet")
    return written


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--train-sources", default=",".join(TRAIN_SOURCES), help="comma-separated FlashRAG configs ('' for none)"
    )
    parser.add_argument(
        "--test-sources", default=",".join(EVAL_SPLITS), help=f"comma-separated subset of {', '.join(EVAL_SPLITS)}"
    )
    parser.add_argument("--format", nargs="+", choices=FORMATS, default=list(FORMATS), help="file formats to write")
    parser.add_argument(
        "--subset", type=int, default=None, help="random rows kept per evaluation set (Search-R1: 1000)"
    )
    parser.add_argument("--repo", default=FLASHRAG_REPO, help="hub dataset repository")
    args = parser.parse_args(argv)
    try:
        written = prepare(
            args.out, _names(args.train_sources), _names(args.test_sources), args.format, args.subset, args.repo
        )
    except HubUnavailable as err:
        raise SystemExit(f"prepare_data: {err}") from None
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    main()
