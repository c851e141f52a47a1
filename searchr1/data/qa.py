"""QA examples: the typed record, validating readers (JSONL, parquet, Hugging Face hub) and Search-R1's format.

Every row becomes a :class:`QAExample` ``(id, question, golden_answers, data_source, metadata)``. Three inputs are read:

* FlashRAG JSONL (``{"id", "question", "golden_answers", "data_source"?}``; ``golden_answers`` may be one string);
* parquet with the same columns, or Search-R1's processed schema (``data_source``, ``prompt`` = one user message whose
  text ends in ``Question: <q>``, ``reward_model.ground_truth.target`` = answers, ``extra_info`` = ``{index, split}``)
  as written by its ``scripts/data_process/qa_search_*_merge.py``;
* Hugging Face datasets: ``hf://<owner>/<repo>[/<config>]/<split>`` or :class:`DataSource`, loaded with
  ``datasets.load_dataset(path, name, split=split)``.

Every row is validated and a bad one raises :class:`DataError` naming the file, the 1-based JSONL line (or the
0-based parquet / dataset row index) and how to fix it. Departures from Search-R1: rows are checked (Search-R1 trusts
them), and :func:`to_search_r1_record` keeps the question column as given (Search-R1 stores it already normalised;
the prompt text is identical).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from searchr1.protocols import question_from_prompt
from searchr1.registry import Registry

FLASHRAG_REPO = "RUC-NLPIR/FlashRAG_datasets"
"""Hub dataset that holds the FlashRAG QA benchmarks (one config per dataset)."""

TRAIN_SOURCES = ("nq", "hotpotqa")
"""Search-R1's training mix (``qa_search_train_merge.py --data_sources nq,hotpotqa``), ``train`` split of each."""

EVAL_SPLITS = {
    "nq": "test",
    "triviaqa": "test",
    "popqa": "test",
    "hotpotqa": "dev",
    "2wikimultihopqa": "dev",
    "musique": "dev",
    "bamboogle": "test",
}
"""The 7 evaluation sets and their split: ``test`` where FlashRAG has one, else ``dev`` (``qa_search_test_merge``)."""

_KNOWN_COLUMNS = {"id", "question", "golden_answers", "data_source", "metadata"}
_SEARCH_R1_COLUMNS = {"prompt", "reward_model", "extra_info", "ability"}


class DataError(ValueError):
    """A QA data file or row is malformed; the message names the place and the fix."""


@dataclass(frozen=True)
class QAExample:
    """One question with its reference answers.

    Attributes:
        id: unique within its ``data_source``.
        question: the raw question text (prompt formatting happens in ``searchr1.protocols``).
        golden_answers: non-empty list of accepted answer strings.
        data_source: benchmark name (``"nq"``, ``"hotpotqa"``, ...), used to group metrics.
        metadata: any further columns of the row (e.g. HotpotQA ``type``/``level``); ``is_padding`` marks a
            duplicate added only to even out evaluation shards (see ``searchr1.data.datamodule``). Equality
            (``==``) ignores metadata.
    """

    id: str
    question: str
    golden_answers: list[str]
    data_source: str
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)


GENERIC_STEMS = frozenset({"questions", "test", "train", "dev", "val", "validation", "data"})


@dataclass(frozen=True)
class DataSource:
    """Where to read QA rows from (usable as a LightningCLI ``class_path``/``init_args`` entry).

    Attributes:
        path: a local ``.jsonl``/``.parquet`` file, or a Hugging Face dataset name (any path without one of those
            suffixes), e.g. ``"RUC-NLPIR/FlashRAG_datasets"``.
        name: the dataset config for hub datasets (``"nq"``); ignored for local files.
        split: the split for hub datasets; ignored for local files.
        data_source: the benchmark name given to rows that do not carry one; defaults to the file's stem or the
            dataset config name (or the repository name without a config).
    """

    path: str
    name: str | None = None
    split: str = "train"
    data_source: str | None = None

    @property
    def is_local(self) -> bool:
        """True for a local file (its suffix has a registered reader)."""
        return Path(self.path).suffix.lower() in READERS

    @property
    def default_data_source(self) -> str:
        """``data_source`` when given, else the file stem (the folder name for generic stems such as
        ``questions``/``test``/``train``/``dev``) / config name / repository name."""
        if self.data_source:
            return self.data_source
        if self.is_local:
            path = Path(self.path)
            if path.stem.lower() in GENERIC_STEMS and path.parent.name:
                return path.parent.name
            return path.stem
        return self.name or self.path.rstrip("/").rsplit("/", 1)[-1]

    def describe(self) -> str:
        """Human-readable location used in error messages."""
        if self.is_local:
            return self.path
        return "hf://" + "/".join(p for p in (self.path, self.name, self.split) if p)


def parse_source(spec: str | DataSource) -> DataSource:
    """Turn a config entry into a :class:`DataSource`.

    Args:
        spec: a :class:`DataSource`, a local file path, or ``hf://<owner>/<repo>[/<config>]/<split>``.

    Returns:
        The data source.
    """
    if isinstance(spec, DataSource):
        if not spec.path.startswith("hf://"):
            return spec
        parsed = parse_source(spec.path)
        return DataSource(parsed.path, spec.name or parsed.name, parsed.split, spec.data_source)
    if not isinstance(spec, str):
        raise DataError(f"data source {spec!r} must be a path string or a DataSource, got {type(spec).__name__}")
    if spec.startswith("hf://"):
        parts = [p for p in spec[len("hf://") :].split("/") if p]
        if len(parts) == 3:
            return DataSource(path="/".join(parts[:2]), split=parts[2])
        if len(parts) == 4:
            return DataSource(path="/".join(parts[:2]), name=parts[2], split=parts[3])
        raise DataError(
            f"cannot parse hub spec {spec!r}. Fix: write hf://<owner>/<repo>/<config>/<split> "
            f"(e.g. hf://{FLASHRAG_REPO}/nq/test) or hf://<owner>/<repo>/<split>"
        )
    source = DataSource(path=spec)
    if not source.is_local:
        raise DataError(
            f"unknown data file type {spec!r}; valid suffixes: {', '.join(READERS.names())}. "
            f"Fix: use one of those, or hf://<owner>/<repo>/<config>/<split> for a hub dataset"
        )
    return source


# --------------------------------------------------------------------------------------------- row validation


def _fail(where: str, problem: str, fix: str) -> DataError:
    return DataError(f"{where}: {problem}. Fix: {fix}")


def _check_answers(answers: Any, where: str) -> list[str]:
    if answers is None:
        raise _fail(where, "missing 'golden_answers'", "give a non-empty list of answer strings")
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, (list, tuple)):
        raise _fail(
            where, f"'golden_answers' is a {type(answers).__name__}, not a list", "give a list of answer strings"
        )
    if not answers:
        raise _fail(where, "'golden_answers' is empty", "give at least one reference answer or drop the row")
    for answer in answers:
        if not isinstance(answer, str):
            raise _fail(
                where,
                f"golden answer {answer!r} is a {type(answer).__name__}",
                'write every answer as a string ("1999")',
            )
        if not answer.strip():
            raise _fail(where, "a golden answer is blank", "remove blank answers")
    return list(answers)


def make_example(row: dict[str, Any], default_source: str, where: str, index: int) -> QAExample:
    """Validate one FlashRAG-style row and build the :class:`QAExample`.

    Args:
        row: the decoded row; unknown keys (and a ``metadata`` dict) go to ``QAExample.metadata``.
        default_source: ``data_source`` when the row has none.
        where: location for error messages (``"file.jsonl:12"``).
        index: 0-based row position, used for the id ``"<data_source>_<index>"`` when the row has no ``id``.
    """
    if not isinstance(row, dict):
        raise _fail(
            where, f"row is a {type(row).__name__}, not an object", 'write one JSON object per line: {"id": ...}'
        )
    question = row.get("question")
    if question is None:
        raise _fail(where, "missing 'question'", "add a non-empty 'question' string")
    if not isinstance(question, str):
        raise _fail(where, f"'question' is a {type(question).__name__}, not a string", "write the question as text")
    if not question.strip():
        raise _fail(where, "'question' is empty", "fill in the question or drop the row")
    answers = _check_answers(row.get("golden_answers"), where)
    data_source = row.get("data_source") or default_source
    if not isinstance(data_source, str):
        raise _fail(where, f"'data_source' is a {type(data_source).__name__}", "write the benchmark name as a string")
    qid = row.get("id")
    if qid is None:
        qid = f"{data_source}_{index}"
    elif isinstance(qid, int) and not isinstance(qid, bool):
        qid = str(qid)
    elif not isinstance(qid, str) or not qid:
        raise _fail(where, f"'id' {qid!r} is not a non-empty string", "write ids as strings, unique per data source")
    metadata = {k: v for k, v in row.items() if k not in _KNOWN_COLUMNS}
    if isinstance(row.get("metadata"), dict):
        metadata.update(row["metadata"])
    return QAExample(id=qid, question=question, golden_answers=answers, data_source=data_source, metadata=metadata)


def check_unique_ids(examples: Iterable[tuple[QAExample, str]]) -> None:
    """Raise :class:`DataError` when two examples share ``(data_source, id)``; pairs carry their locations."""
    seen: dict[tuple[str, str], str] = {}
    for example, where in examples:
        key = (example.data_source, example.id)
        if key in seen:
            raise _fail(
                where,
                f"duplicate id {example.id!r} in data source {example.data_source!r} (first at {seen[key]})",
                "make ids unique per data source, or give the files different data_source names",
            )
        seen[key] = where


# --------------------------------------------------------------------------------------------- readers

RowReader = Callable[[DataSource], Iterator[tuple[dict[str, Any], str]]]
READERS: Registry[RowReader] = Registry("data file suffix")
"""Suffix → generator of ``(row, location)`` pairs."""


@READERS.register(".jsonl")
def _jsonl_rows(source: DataSource) -> Iterator[tuple[dict[str, Any], str]]:
    with open(source.path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{source.path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise _fail(
                    where,
                    f"invalid JSON ({e.msg.removesuffix(' at')} at column {e.colno})",
                    "write one JSON object per line",
                ) from None
            yield row, where


@READERS.register(".parquet")
def _parquet_rows(source: DataSource) -> Iterator[tuple[dict[str, Any], str]]:
    import pyarrow.parquet as pq

    for i, row in enumerate(pq.read_table(source.path).to_pylist()):
        yield row, f"{source.path} row {i}"


def _hub_rows(source: DataSource) -> Iterator[tuple[dict[str, Any], str]]:
    import datasets

    dataset = datasets.load_dataset(source.path, source.name, split=source.split)
    where = source.describe()
    for i, row in enumerate(dataset):
        yield dict(row), f"{where} row {i}"


def from_search_r1_row(row: dict[str, Any]) -> dict[str, Any]:
    """Map a Search-R1 processed row to FlashRAG columns (kept columns win over recovered ones).

    The question comes from a ``question`` column, else ``extra_info["question"]``, else the prompt text after
    ``Question:``; answers from ``golden_answers`` or ``reward_model.ground_truth.target``; the id from ``id`` or
    ``"<split>_<index>"`` of ``extra_info``.
    """
    extra = row.get("extra_info") or {}
    out = {k: v for k, v in row.items() if k not in _SEARCH_R1_COLUMNS}
    if out.get("question") is None:
        prompt = row.get("prompt") or []
        content = prompt[-1].get("content", "") if isinstance(prompt, list) and prompt else ""
        out["question"] = extra.get("question") or question_from_prompt(content if isinstance(content, str) else "")
    if out.get("golden_answers") is None:
        truth = (row.get("reward_model") or {}).get("ground_truth") or {}
        out["golden_answers"] = truth.get("target") if isinstance(truth, dict) else None
    if out.get("id") is None and extra.get("index") is not None:
        out["id"] = f"{extra.get('split', 'row')}_{extra['index']}"
    out["metadata"] = {
        **(out.get("metadata") or {}),
        **{k: row[k] for k in ("ability", "extra_info") if row.get(k) is not None},
    }
    return out


def iter_rows(source: DataSource) -> Iterator[tuple[dict[str, Any], str]]:
    """Yield ``(FlashRAG-style row, location)`` pairs of a source; missing files raise ``FileNotFoundError``."""
    if source.is_local:
        path = Path(source.path)
        if not path.is_file():
            raise FileNotFoundError(
                f"QA data file not found: {path} (absolute: {path.absolute()}). "
                "Fix: check the path, or create it with `python tools/prepare_data.py --out <dir>`"
            )
        rows = READERS.get(path.suffix.lower())(source)
    else:
        rows = _hub_rows(source)
    for row, where in rows:
        if isinstance(row, dict) and "prompt" in row and "reward_model" in row:
            row = from_search_r1_row(row)
        yield row, where


def read_located(spec: str | DataSource) -> list[tuple[QAExample, str]]:
    """Read and validate every row of one source; returns ``(example, location)`` pairs in file order.

    Args:
        spec: a local path, an ``hf://`` spec or a :class:`DataSource` (see :func:`parse_source`).
    """
    source = parse_source(spec)
    default = source.default_data_source
    located = [(make_example(row, default, where, i), where) for i, (row, where) in enumerate(iter_rows(source))]
    if not located:
        raise DataError(f"{source.describe()}: no rows. Fix: point to a file with at least one question")
    check_unique_ids(located)
    return located


def read_examples(spec: str | DataSource) -> list[QAExample]:
    """Read and validate one source (ids unique per ``data_source``); see :func:`read_located`."""
    return [example for example, _ in read_located(spec)]


# --------------------------------------------------------------------------------------------- Search-R1 format


def to_search_r1_record(
    example: QAExample, split: str, index: int, prompt_fn: Callable[[str], str] | None = None
) -> dict[str, Any]:
    """One row of Search-R1's processed parquet (``qa_search_{train,test}_merge.py``'s ``process_fn``).

    Args:
        example: the QA example.
        split: ``"train"`` or ``"test"`` (Search-R1 writes ``"test"`` for dev-split eval sets too).
        index: row index within its data source.
        prompt_fn: question → prompt text; defaults to ``searchr1.protocols.instruction`` (normalises the
            question and fills Search-R1's template).

    Returns:
        A dict with ``id``, ``question``, ``golden_answers`` (the FlashRAG columns Search-R1's ``map`` keeps),
        ``data_source``, ``prompt``, ``ability``, ``reward_model`` and ``extra_info``.
    """
    if prompt_fn is None:
        from searchr1.protocols import instruction as prompt_fn
    return {
        "id": example.id,
        "question": example.question,
        "golden_answers": list(example.golden_answers),
        "data_source": example.data_source,
        "prompt": [{"role": "user", "content": prompt_fn(example.question)}],
        "ability": "fact-reasoning",
        "reward_model": {"style": "rule", "ground_truth": {"target": list(example.golden_answers)}},
        "extra_info": {"split": split, "index": index},
    }


def to_flashrag_record(example: QAExample) -> dict[str, Any]:
    """The JSONL row for an example (FlashRAG columns plus ``data_source``; metadata is dropped)."""
    return {
        "id": example.id,
        "question": example.question,
        "golden_answers": list(example.golden_answers),
        "data_source": example.data_source,
    }
