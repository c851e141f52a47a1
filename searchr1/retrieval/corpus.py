"""Streaming reader for wiki-18 style corpora and a row-addressable passage store.

Corpus format (FlashRAG / Search-R1 wiki-18): one JSON object per line, ``{"id": str, "contents":
"\\"Title\\"\\ntext"}``; the title line may lack the quotes. ``.jsonl`` and ``.jsonl.gz`` are read the
same way, line by line, so a 21M-passage corpus is never held as Python objects.

Every index folder keeps its own passage store: ``docs.jsonl`` (the corpus lines, one per row, in index
order) plus ``doc_offsets.npy`` (``int64``, ``(N + 1,)`` byte offsets). Serving fetches row ``i`` by
slicing ``docs.jsonl`` through ``mmap`` between ``offsets[i]`` and ``offsets[i + 1]`` and parsing that one
line, so memory stays flat whatever the corpus size. Copying the corpus into the index (rather than
pointing at it) makes the folder self-contained and lets ``.gz`` corpora be served by seek.
"""

from __future__ import annotations

import array
import gzip
import hashlib
import io
import json
import mmap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson

from searchr1.retrieval.types import Passage

DOCS_FILE = "docs.jsonl"
OFFSETS_FILE = "doc_offsets.npy"


class CorpusFormatError(ValueError):
    """A corpus line is not a JSON object with string ``id`` and ``contents`` (message names file:line)."""


@dataclass(frozen=True)
class CorpusRecord:
    """One corpus line.

    Attributes:
        id: passage id (ints in the file are turned into strings).
        contents: ``"Title"\\ntext`` as stored.
        line: the JSON line re-encoded as UTF-8 bytes with a trailing newline (what the store keeps).
    """

    id: str
    contents: str
    line: bytes


def open_corpus(path: str | Path) -> BinaryIO:
    """Open a ``.jsonl`` or ``.jsonl.gz`` corpus for binary line reading."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file {path} does not exist; pass a .jsonl or .jsonl.gz wiki-18 style corpus")
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _json_problem(err: ValueError) -> str:
    if isinstance(err, json.JSONDecodeError):
        return f"{err.msg.removesuffix(' at')} at column {err.colno}"  # json's msg alone is cut ("... at")
    return str(err)


def _parse_line(raw: bytes, where: str) -> CorpusRecord:
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorpusFormatError(f"{where}: not valid JSON ({_json_problem(err)})") from None
    if not isinstance(obj, dict):
        raise CorpusFormatError(f"{where}: expected a JSON object with 'id' and 'contents', got {type(obj).__name__}")
    if "id" not in obj or "contents" not in obj:
        missing = [k for k in ("id", "contents") if k not in obj]
        raise CorpusFormatError(f"{where}: missing field(s) {missing}; each line needs 'id' and 'contents'")
    pid, contents = obj["id"], obj["contents"]
    if not isinstance(pid, str | int) or isinstance(pid, bool) or not isinstance(contents, str):
        raise CorpusFormatError(f"{where}: 'id' must be a string (or int) and 'contents' a string")
    line = json.dumps({"id": str(pid), "contents": contents}, ensure_ascii=False).encode("utf-8") + b"\n"
    return CorpusRecord(id=str(pid), contents=contents, line=line)


def iter_corpus(
    path: str | Path, hasher: hashlib._Hash | None = None, on_progress: Callable[[int], None] | None = None
) -> Iterator[CorpusRecord]:
    """Stream the records of a corpus file, skipping blank lines.

    Args:
        path: ``.jsonl`` or ``.jsonl.gz`` file.
        hasher: optional hashlib object fed every (decompressed) line, so building an index also
            computes the corpus hash in the same pass.
        on_progress: optional callback given the bytes of the file (compressed bytes for ``.gz``) read so
            far, every few thousand lines and at the end (for progress bars with an ETA: see
            :func:`corpus_size`).

    Raises:
        CorpusFormatError: on the first bad line, naming ``file:line``; after the last line, on a passage id used
            twice (both lines named).
    """
    id_hashes = array.array("q")  # 8 bytes a passage: duplicates are looked for once, at the end
    with open_corpus(path) as fh:
        raw_fh = getattr(fh, "fileobj", fh)  # a GzipFile's compressed stream
        for lineno, raw in enumerate(fh, start=1):
            if hasher is not None:
                hasher.update(raw)
            if on_progress is not None and lineno % 4096 == 0:
                on_progress(raw_fh.tell())
            if not raw.strip():
                continue
            record = _parse_line(raw, f"{path}:{lineno}")
            id_hashes.append(hash(record.id))
            yield record
        if on_progress is not None:
            on_progress(corpus_size(path))
    check_unique_ids(path, id_hashes)


def check_unique_ids(path: str | Path, id_hashes: array.array) -> None:
    """Raise :class:`CorpusFormatError` naming both lines of the first passage id that occurs twice in ``path``.

    ``id_hashes`` are the ``hash()`` of every id in file order; a repeated hash is confirmed by re-reading the
    file (two ids may share a hash), so the common case costs one sort and no second pass.
    """
    hashes = np.frombuffer(id_hashes, dtype=np.int64)
    ordered = np.sort(hashes)
    repeated = set(ordered[1:][ordered[1:] == ordered[:-1]].tolist())
    if not repeated:
        return
    first: dict[str, int] = {}
    with open_corpus(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            pid = str(json.loads(raw)["id"])
            if hash(pid) not in repeated:
                continue
            if pid in first:
                raise CorpusFormatError(
                    f"{path}:{lineno}: passage id {pid!r} is already used at line {first[pid]}; every passage needs "
                    "its own id (the retriever returns passages by id): renumber or drop the duplicate"
                )
            first[pid] = lineno


def corpus_size(path: str | Path) -> int:
    """Bytes of the corpus file as stored (what ``iter_corpus``'s ``on_progress`` counts up to)."""
    return Path(path).stat().st_size


def corpus_hash(path: str | Path) -> str:
    """SHA-256 of the decompressed corpus bytes (same for a ``.jsonl`` and its ``.jsonl.gz``)."""
    hasher = hashlib.sha256()
    with open_corpus(path) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def iter_chunks(records: Iterator[CorpusRecord], size: int) -> Iterator[list[CorpusRecord]]:
    """Group a record stream into lists of at most ``size`` records."""
    chunk: list[CorpusRecord] = []
    for rec in records:
        chunk.append(rec)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class DocStoreWriter:
    """Appends corpus lines to a passage store (a file in ``out_dir``, or memory when ``out_dir`` is None)."""

    def __init__(self, out_dir: str | Path | None = None) -> None:
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self._fh: BinaryIO = open(self.out_dir / DOCS_FILE, "wb") if self.out_dir else io.BytesIO()  # noqa: SIM115
        self._offsets = array.array("q", [0])  # 8 bytes a passage (a list of ints took ~36)
        self._end = 0

    def add(self, record: CorpusRecord) -> None:
        """Append one record (its row is the number of records added before it)."""
        self._fh.write(record.line)
        self._end += len(record.line)
        self._offsets.append(self._end)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def finish(self) -> DocStore:
        """Flush, save the offsets and return a store reading what was written."""
        offsets = np.frombuffer(self._offsets, dtype=np.int64).copy()
        if self.out_dir is None:
            assert isinstance(self._fh, io.BytesIO)
            return DocStore(self._fh.getvalue(), offsets)
        self._fh.close()
        np.save(self.out_dir / OFFSETS_FILE, offsets)
        return DocStore.load(self.out_dir)


class DocStore:
    """Passages addressable by row: a byte buffer (mmap or bytes) of JSON lines plus ``(N + 1,)`` offsets."""

    def __init__(self, buffer: bytes | mmap.mmap, offsets: np.ndarray) -> None:
        self._buffer = buffer
        # a plain ndarray view of the (possibly memory-mapped) offsets: np.memmap's Python __getitem__ is far slower
        self.offsets = offsets.view(np.ndarray) if isinstance(offsets, np.memmap) else offsets
        # a memoryview lookup is cheaper still than ndarray indexing (one per passage read)
        self._offsets_view = memoryview(np.ascontiguousarray(self.offsets, dtype=np.int64))

    @classmethod
    def load(cls, folder: str | Path) -> DocStore:
        """Memory-map ``docs.jsonl`` and ``doc_offsets.npy`` of an index folder."""
        folder = Path(folder)
        offsets = np.load(folder / OFFSETS_FILE, mmap_mode="r")
        with open(folder / DOCS_FILE, "rb") as fh:
            size = fh.seek(0, io.SEEK_END)
            buffer: bytes | mmap.mmap = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        if int(offsets[-1]) != size:
            end = int(offsets[-1])
            raise ValueError(f"{folder}: {DOCS_FILE} has {size} bytes but the offsets end at {end}; rebuild the index")
        return cls(buffer, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def contents(self, row: int) -> tuple[str, str]:
        """``(id, contents)`` of row ``row``."""
        obj = loads(self.lines([row])[0])
        return obj["id"], obj["contents"]

    def passage(self, row: int, score: float = 0.0) -> Passage:
        """Row ``row`` as a :class:`Passage` with the given score."""
        pid, contents = self.contents(row)
        return Passage.from_contents(pid, contents, score=score)

    def lines(self, rows: list[int]) -> list[bytes]:
        """The stored JSON objects ``{"id": ..., "contents": ...}`` of ``rows`` (UTF-8, no newline)."""
        at, buf = self._offsets_view, self._buffer  # Python-int indexing: no numpy call per request
        return [buf[at[r] : at[r + 1] - 1] for r in rows]

    def passages(self, rows: list[int], scores: list[float]) -> list[Passage]:
        """Rows ``rows`` as passages with ``scores``, parsed with one ``orjson`` call for all of them."""
        if not rows:
            return []
        lines = self.lines(rows)
        try:
            objs = orjson.loads(b"[" + b",".join(lines) + b"]")
        except orjson.JSONDecodeError:  # e.g. "\ud800" escapes: line by line, with the json fallback
            objs = [loads(x) for x in lines]
        make = Passage.from_contents
        return [make(o["id"], o["contents"], s) for o, s in zip(objs, scores)]


def loads(data: bytes) -> Any:
    """Parse JSON with ``orjson`` (several times faster than ``json``), falling back to ``json.loads`` for what
    ``orjson`` refuses but ``json`` takes (e.g. ``"\\ud800"`` escapes). Used for stored lines and for server replies."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)
