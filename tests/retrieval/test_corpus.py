"""Corpus reader and passage store: quoted/unquoted titles, .gz, bad lines named by file:line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from searchr1.retrieval.corpus import CorpusFormatError, DocStoreWriter, corpus_hash, iter_corpus


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_reads_flashrag_sample_quoted_and_unquoted(flashrag_corpus: Path) -> None:
    records = list(iter_corpus(flashrag_corpus))
    assert len(records) == 1000
    raw = [json.loads(line) for line in flashrag_corpus.read_text().splitlines()]
    assert [r.id for r in records] == [str(x["id"]) for x in raw]
    assert [r.contents for r in records] == [x["contents"] for x in raw]
    unquoted = [r for r in records if not r.contents.startswith('"')]
    assert len(unquoted) == 121


def test_gz_equals_plain_and_same_hash(tmp_path: Path, hotpot_corpus: Path) -> None:
    gz = tmp_path / "corpus.jsonl.gz"
    with gzip.open(gz, "wb") as fh:
        fh.write(hotpot_corpus.read_bytes())
    plain = list(iter_corpus(hotpot_corpus))
    assert [(r.id, r.contents) for r in iter_corpus(gz)] == [(r.id, r.contents) for r in plain]
    assert corpus_hash(gz) == corpus_hash(hotpot_corpus)


@pytest.mark.parametrize(
    ("bad", "what"),
    [
        ("{not json", "not valid JSON"),
        ('["a", "b"]', "expected a JSON object"),
        ('{"id": "3"}', "missing field"),
        ('{"id": "3", "contents": 5}', "'contents' a string"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path: Path, bad: str, what: str) -> None:
    good = json.dumps({"id": "1", "contents": '"T"\nx'})
    path = _write(tmp_path / "c.jsonl", [good, "", good, bad, good])
    with pytest.raises(CorpusFormatError, match=rf"c\.jsonl:4: .*{what}"):
        list(iter_corpus(path))


def test_int_ids_become_strings_and_blank_lines_skipped(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.jsonl", [json.dumps({"id": 7, "contents": "T\nbody"}), "   "])
    (rec,) = iter_corpus(path)
    assert rec.id == "7" and rec.contents == "T\nbody"


def test_missing_file_is_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(iter_corpus(tmp_path / "nope.jsonl"))


@pytest.mark.parametrize("on_disk", [False, True])
def test_docstore_fetches_rows(tmp_path: Path, flashrag_corpus: Path, on_disk: bool) -> None:
    records = list(iter_corpus(flashrag_corpus))
    writer = DocStoreWriter(tmp_path if on_disk else None)
    for rec in records:
        writer.add(rec)
    store = writer.finish()
    assert len(store) == 1000
    for row in (0, 1, 499, 999):
        pid, contents = store.contents(row)
        assert (pid, contents) == (records[row].id, records[row].contents)
    unquoted_row = next(i for i, r in enumerate(records) if not r.contents.startswith('"'))
    p = store.passage(unquoted_row, score=2.5)
    assert p.title == records[unquoted_row].contents.split("\n")[0].strip()
    assert p.score == 2.5 and p.raw_contents == records[unquoted_row].contents
