"""Index kinds: how each kind of index folder is built from a corpus and opened as a retriever.

An index folder's ``manifest.json`` names its kind (``bm25``, ``dense``); :data:`INDEX_KINDS` maps the kind to its
:class:`IndexKind` (``build`` and ``open``), so the CLI, the server and evaluation dispatch through one registry. The
entries import their heavy modules (bm25s, torch, faiss) only when they run. A new kind registers an
``IndexKind`` here and writes its kind into the manifest it builds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from searchr1.registry import Registry
from searchr1.retrieval.base import CachedRetriever
from searchr1.retrieval.manifest import IndexManifest


@dataclass
class BuildOptions:
    """Settings of an index build (each kind reads its own; ``searchr1-index build`` flags of the same names).

    Attributes:
        k1: BM25 k1 (pyserini's default).
        b: BM25 b (pyserini's default).
        stopwords: BM25 stopword list: ``en``, ``en_plus``, ``none``.
        stemmer: BM25 stemmer: ``porter`` (pyserini's), ``none`` or another PyStemmer algorithm.
        memory_budget_mb: BM25: RAM for the build's buffers (the vocabulary comes on top).
        encoder: dense: HF model name or local folder.
        preset: dense: encoder preset (``e5``, ``bge``, ``minilm``).
        pooling: dense: ``mean`` or ``cls`` (None: the preset's).
        max_length: dense: tokens per passage.
        batch_size: dense: passages per forward pass.
        device: dense: encoder device (None: CUDA when available).
        faiss: dense: faiss ``index_factory`` string.
        shard_size: dense: passages per embedding shard.
        train_size: dense: vectors used to train IVF/PQ.
    """

    k1: float = 0.9
    b: float = 0.4
    stopwords: str = "en"
    stemmer: str = "porter"
    memory_budget_mb: float = 2048.0
    encoder: str = "intfloat/e5-base-v2"
    preset: str = "e5"
    pooling: str | None = None
    max_length: int = 256
    batch_size: int = 256
    device: str | None = None
    faiss: str = "Flat"
    shard_size: int = 100_000
    train_size: int = 1_000_000


@dataclass
class OpenOptions:
    """Settings of an opened index (each kind reads its own).

    Attributes:
        dedup: merge identical queries of a batch.
        cache_size: LRU results kept across batches (0: none).
        device: dense: query encoder device.
        use_gpu: dense: faiss on GPU.
        nprobe: dense IVF: cells probed.
        ef_search: dense HNSW: search breadth.
        mmap: dense: memory-map the faiss index.
    """

    dedup: bool = True
    cache_size: int = 0
    device: str | None = None
    use_gpu: bool = False
    nprobe: int | None = None
    ef_search: int | None = None
    mmap: bool = False


@dataclass(frozen=True)
class IndexKind:
    """One kind of index folder.

    Attributes:
        build: ``(corpus, out, options) -> manifest``: index ``corpus`` into the folder ``out``.
        open: ``(index_dir, options) -> retriever``: the retriever over a built folder.
    """

    build: Callable[[str, str, BuildOptions], IndexManifest]
    open: Callable[[str, OpenOptions], CachedRetriever]


INDEX_KINDS: Registry[IndexKind] = Registry("index kind")


def _build_bm25(corpus: str, out: str, o: BuildOptions) -> IndexManifest:
    from searchr1.retrieval.bm25 import BM25Retriever

    return BM25Retriever.build(
        corpus, out, k1=o.k1, b=o.b, stopwords=o.stopwords, stemmer=o.stemmer, memory_budget_mb=o.memory_budget_mb
    )


def _open_bm25(index_dir: str, o: OpenOptions) -> CachedRetriever:
    from searchr1.retrieval.bm25 import BM25Retriever

    return BM25Retriever(index_dir=index_dir, dedup=o.dedup, cache_size=o.cache_size)


def _build_dense(corpus: str, out: str, o: BuildOptions) -> IndexManifest:
    from searchr1.retrieval.dense import build_dense_index
    from searchr1.retrieval.encoder import TextEncoder

    encoder = TextEncoder(
        o.encoder, preset=o.preset, pooling=o.pooling, max_length=o.max_length, batch_size=o.batch_size, device=o.device
    )
    return build_dense_index(corpus, out, encoder, o.faiss, shard_size=o.shard_size, train_size=o.train_size)


def _open_dense(index_dir: str, o: OpenOptions) -> CachedRetriever:
    from searchr1.retrieval.dense import DenseRetriever

    return DenseRetriever(
        index_dir=index_dir,
        device=o.device,
        use_gpu=o.use_gpu,
        nprobe=o.nprobe,
        ef_search=o.ef_search,
        mmap=o.mmap,
        dedup=o.dedup,
        cache_size=o.cache_size,
    )


INDEX_KINDS.register("bm25")(IndexKind(build=_build_bm25, open=_open_bm25))
INDEX_KINDS.register("dense")(IndexKind(build=_build_dense, open=_open_dense))


def build_index(kind: str, corpus: str, out: str, options: BuildOptions | None = None) -> IndexManifest:
    """Index ``corpus`` into ``out`` as an index of ``kind`` (a name in :data:`INDEX_KINDS`)."""
    return INDEX_KINDS.get(kind).build(corpus, out, options or BuildOptions())


def load_retriever(
    index_dir: str,
    dedup: bool = True,
    cache_size: int = 0,
    device: str | None = None,
    use_gpu: bool = False,
    nprobe: int | None = None,
    ef_search: int | None = None,
    mmap: bool = False,
) -> CachedRetriever:
    """Open an index folder with the retriever its manifest names (``mmap``: memory-map a dense faiss index)."""
    kind = IndexManifest.load(index_dir).kind
    if kind not in INDEX_KINDS:
        raise ValueError(f"{index_dir}: unknown index kind {kind!r}; valid: {', '.join(INDEX_KINDS.names())}")
    options = OpenOptions(dedup, cache_size, device, use_gpu, nprobe, ef_search, mmap)
    return INDEX_KINDS.get(kind).open(index_dir, options)


def open_indexes(index_dirs: list[str], rrf_k: float = 10.0, options: OpenOptions | None = None) -> CachedRetriever:
    """One index folder's retriever, or the reciprocal-rank fusion (``HybridRetriever``) of several.

    With several indexes the parts search without their own de-duplication and cache; the fusion has them.
    """
    o = options or OpenOptions()
    if len(index_dirs) == 1:
        return load_retriever(index_dirs[0], o.dedup, o.cache_size, o.device, o.use_gpu, o.nprobe, o.ef_search, o.mmap)
    from searchr1.retrieval.hybrid import HybridRetriever

    parts = [load_retriever(d, False, 0, o.device, o.use_gpu, o.nprobe, o.ef_search, o.mmap) for d in index_dirs]
    return HybridRetriever(parts, rrf_k=rrf_k, dedup=o.dedup, cache_size=o.cache_size)
