"""The manifest every index folder carries: what built it, so a mismatched load fails loudly.

``manifest.json`` records the retriever kind, the corpus (path, SHA-256 of its decompressed bytes,
passage count) and the build settings (BM25 ``k1``/``b``/stopwords; dense encoder, pooling, prefixes,
faiss factory string). Loading checks the kind and any setting the caller pins (e.g. the encoder a
``DenseRetriever`` was configured with, or the corpus it was told to serve).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1


class IndexMismatchError(ValueError):
    """An index folder was built with other settings (or another corpus) than the ones asked for."""


@dataclass
class IndexManifest:
    """Provenance of an index folder.

    Attributes:
        kind: ``"bm25"`` or ``"dense"``.
        corpus_path: the corpus file the index was built from (as given).
        corpus_sha256: SHA-256 of the decompressed corpus bytes.
        num_docs: number of passages indexed (rows of the passage store).
        settings: build settings of the retriever kind (JSON values).
        complete: False while a resumable build is in progress.
        format_version: layout version of the folder.
    """

    kind: str
    corpus_path: str
    corpus_sha256: str
    num_docs: int
    settings: dict[str, Any] = field(default_factory=dict)
    complete: bool = True
    format_version: int = FORMAT_VERSION

    def save(self, folder: str | Path) -> None:
        """Write ``manifest.json`` into ``folder`` (atomically, via a temporary file)."""
        path = Path(folder) / MANIFEST_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True))
        tmp.replace(path)

    @classmethod
    def load(cls, folder: str | Path) -> IndexManifest:
        """Read ``manifest.json`` from an index folder."""
        path = Path(folder) / MANIFEST_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{folder} is not an index folder (no {MANIFEST_FILE}); build one with "
                "`searchr1-index build --corpus CORPUS --retriever bm25|dense --out DIR`"
            )
        data = json.loads(path.read_text())
        return cls(**data)

    def check(self, kind: str, corpus_sha256: str | None = None, **settings: Any) -> None:
        """Raise :class:`IndexMismatchError` unless the index has this kind, corpus and settings.

        Args:
            kind: the retriever kind the caller wants.
            corpus_sha256: if given, the hash of the corpus the caller expects.
            **settings: settings the caller pins; ``None`` values are not checked.
        """
        if self.format_version != FORMAT_VERSION:
            raise IndexMismatchError(
                f"index format version {self.format_version} but this code reads {FORMAT_VERSION}; rebuild the index"
            )
        if self.kind != kind:
            raise IndexMismatchError(
                f"index was built for retriever {self.kind!r} but loaded as {kind!r}; "
                f"use the {self.kind} retriever or rebuild with --retriever {kind}"
            )
        if not self.complete:
            raise IndexMismatchError("index build did not finish; rerun the same build command to resume it")
        if corpus_sha256 is not None and corpus_sha256 != self.corpus_sha256:
            raise IndexMismatchError(
                f"index was built from another corpus ({self.corpus_path}, sha256 {self.corpus_sha256[:12]}…) "
                f"than the one given (sha256 {corpus_sha256[:12]}…); rebuild the index for this corpus"
            )
        for name, want in settings.items():
            have = self.settings.get(name)
            if want is not None and have != want:
                raise IndexMismatchError(
                    f"index was built with {name}={have!r} but {name}={want!r} was asked for; "
                    f"pass {name}={have!r} or rebuild the index"
                )


def start_build(folder: str | Path, kind: str, corpus: str, settings: dict[str, Any]) -> bool:
    """Begin (or resume) a resumable build in ``folder``: write an incomplete manifest, unless one with these
    settings is there already.

    Returns:
        True when ``folder`` already holds a *complete* index of this kind and settings (nothing to redo).

    Raises:
        IndexMismatchError: ``folder`` holds an index (finished or not) of another kind or other settings.
    """
    folder = Path(folder)
    if (folder / MANIFEST_FILE).exists():
        old = IndexManifest.load(folder)
        if old.kind != kind or old.settings != settings:
            raise IndexMismatchError(
                f"{folder} holds an index built with other settings ({old.kind}, {old.settings}); "
                f"asked for {kind} with {settings}. Use another --out folder or delete this one"
            )
        if old.complete:
            return True
    IndexManifest(kind, str(corpus), "", 0, settings, complete=False).save(folder)
    return False
