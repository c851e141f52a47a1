"""Dense retriever: a ``TextEncoder`` plus a faiss inner-product index (Search-R1's e5 + faiss setup).

Index folder layout: the passage store (``docs.jsonl``, ``doc_offsets.npy``), ``embeddings/shard_*.npy``
(``(S, H)`` float32 unit rows, ``shard_size`` passages each), ``faiss.index`` and ``manifest.json``.
Building is resumable: the manifest is written first with ``complete=false`` and the build settings; a
rerun with the same settings skips shards already on disk (the passage store is rewritten, cheap next
to encoding), and the add phase continues from its last checkpoint (``faiss.partial.index``: the trained
index, then the index each time it has doubled). Any faiss ``index_factory`` string works (``Flat``,
``HNSW64``, ``IVF4096,PQ64`` …); the metric is inner product, and indexes that need training are trained on up
to ``train_size`` vectors.
``use_gpu=True`` moves the index to all GPUs when ``faiss-gpu`` is installed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path

import faiss
import numpy as np
from tqdm.auto import tqdm

from searchr1.retrieval.base import StoreRetriever
from searchr1.retrieval.corpus import DocStore, DocStoreWriter, corpus_hash, iter_chunks, iter_corpus
from searchr1.retrieval.encoder import TextEncoder
from searchr1.retrieval.manifest import MANIFEST_FILE, IndexManifest, start_build
from searchr1.retrieval.types import Hits

log = logging.getLogger(__name__)
EMB_DIR = "embeddings"
FAISS_FILE = "faiss.index"


def _shard_path(out: Path, i: int) -> Path:
    return out / EMB_DIR / f"shard_{i:05d}.npy"


def _encode_shards(corpus: str, out: Path, encoder: TextEncoder, shard_size: int, progress: bool) -> tuple[int, str]:
    """Write the passage store and every missing embedding shard; return ``(num_docs, corpus_sha256)``."""
    (out / EMB_DIR).mkdir(parents=True, exist_ok=True)
    hasher = hashlib.sha256()
    store = DocStoreWriter(out)
    bar = tqdm(desc="Dense index: encode", unit=" passages", disable=not progress)
    for i, chunk in enumerate(iter_chunks(iter_corpus(corpus, hasher), shard_size)):
        for rec in chunk:
            store.add(rec)
        path = _shard_path(out, i)
        if not path.exists():
            emb = encoder.encode([r.contents for r in chunk], is_query=False)
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, emb)
            tmp.replace(path)
        bar.update(len(chunk))
    bar.close()
    store.finish()
    if len(store) == 0:
        raise ValueError(f"corpus {corpus} has no passages; nothing to index")
    return len(store), hasher.hexdigest()


def make_faiss_index(dim: int, factory: str) -> faiss.Index:
    """An empty inner-product faiss index from an ``index_factory`` string (clear error if invalid)."""
    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        msg = str(err).strip().splitlines()[-1] if str(err).strip() else ""
        raise ValueError(
            f"bad faiss factory string {factory!r} (e.g. 'Flat', 'HNSW64', 'IVF4096,PQ64'): {msg}"
        ) from None


PARTIAL_FILE, PARTIAL_STATE = "faiss.partial.index", "faiss.partial.json"
"""The add phase's checkpoint: the index holding the first ``shards`` shards (``{"shards", "ntotal"}``)."""


def _save_partial(out: Path, index: faiss.Index, shards: int) -> None:
    """Checkpoint the index after ``shards`` shards were added (write-then-rename: a kill keeps the last one)."""
    tmp = out / (PARTIAL_FILE + ".tmp")
    faiss.write_index(index, str(tmp))
    tmp.replace(out / PARTIAL_FILE)
    state = out / (PARTIAL_STATE + ".tmp")
    state.write_text(json.dumps({"shards": shards, "ntotal": int(index.ntotal)}))
    state.replace(out / PARTIAL_STATE)


def _load_partial(out: Path, sizes: list[int]) -> tuple[faiss.Index | None, int]:
    """The add-phase checkpoint and its shard count, when it matches the shards on disk (else ``(None, 0)``)."""
    if not (out / PARTIAL_STATE).is_file() or not (out / PARTIAL_FILE).is_file():
        return None, 0
    state = json.loads((out / PARTIAL_STATE).read_text())
    n = int(state["shards"])
    index = faiss.read_index(str(out / PARTIAL_FILE))
    if n > len(sizes) or index.ntotal != state["ntotal"] or index.ntotal != sum(sizes[:n]):
        log.warning("dense build: the add-phase checkpoint in %s does not match the shards; adding from scratch", out)
        return None, 0
    log.info("dense build: resuming the add phase after shard %d of %d (%d vectors)", n, len(sizes), index.ntotal)
    return index, n


def _train_and_fill(out: Path, dim: int, factory: str, train_size: int, progress: bool) -> faiss.Index:
    """Create the faiss index from the shards (training it on a sample first if it needs training).

    Resumable: the trained empty index is checkpointed, then the index again each time it has doubled (so the
    checkpoints write at most about twice the final index); a rerun continues after the last checkpoint.
    """
    shards = sorted((out / EMB_DIR).glob("shard_*.npy"))
    sizes = [len(np.load(p, mmap_mode="r")) for p in shards]
    index, done = _load_partial(out, sizes)
    if index is None:
        index = make_faiss_index(dim, factory)
        if not index.is_trained:
            rng = np.random.default_rng(0)
            keep = np.sort(rng.choice(sum(sizes), min(train_size, sum(sizes)), replace=False))
            bounds = np.cumsum([0, *sizes])
            sample = np.concatenate(
                [
                    np.load(p, mmap_mode="r")[keep[(keep >= lo) & (keep < hi)] - lo]
                    for p, lo, hi in zip(shards, bounds, bounds[1:])
                ]
            )
            index.train(np.ascontiguousarray(sample, dtype=np.float32))
        _save_partial(out, index, 0)
    saved = index.ntotal
    for i in tqdm(range(done, len(shards)), desc="Dense index: add", disable=not progress):
        index.add(np.ascontiguousarray(np.load(shards[i]), dtype=np.float32))
        if i + 1 < len(shards) and index.ntotal >= 2 * max(saved, sizes[0]):
            _save_partial(out, index, i + 1)
            saved = index.ntotal
    return index


def build_dense_index(
    corpus: str,
    out_dir: str,
    encoder: TextEncoder,
    faiss_factory: str = "Flat",
    shard_size: int = 100_000,
    train_size: int = 1_000_000,
    show_progress: bool = True,
) -> IndexManifest:
    """Encode ``corpus`` with ``encoder`` and write a dense index folder (resumable; see module doc)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    make_faiss_index(encoder.dim, faiss_factory)  # fail before hours of encoding
    settings = {**encoder.settings(), "faiss_factory": faiss_factory, "shard_size": shard_size, "metric": "ip"}
    start_build(out, "dense", corpus, settings)
    num_docs, sha = _encode_shards(corpus, out, encoder, shard_size, show_progress)
    index = _train_and_fill(out, encoder.dim, faiss_factory, train_size, show_progress)
    faiss.write_index(index, str(out / FAISS_FILE))
    for name in (PARTIAL_FILE, PARTIAL_STATE):
        (out / name).unlink(missing_ok=True)
    manifest = IndexManifest("dense", str(corpus), sha, num_docs, settings, complete=True)
    manifest.save(out)
    return manifest


def read_faiss_index(path: Path, mmap: bool) -> faiss.Index:
    """Read a faiss index, memory-mapped (``IO_FLAG_MMAP``) when asked and faiss can map that index type."""
    if mmap:
        try:
            return faiss.read_index(str(path), faiss.IO_FLAG_MMAP)
        except RuntimeError as err:
            log.warning("faiss cannot memory-map %s (%s); reading it into RAM", path, str(err).strip()[-200:])
    return faiss.read_index(str(path))


class DenseRetriever(StoreRetriever):
    """Dense search: encode queries, search the faiss index, fetch passages by row.

    Args:
        index_dir: folder written by ``searchr1-index build --retriever dense``. If missing and ``corpus``
            is given, it is built there first.
        corpus: corpus file. Alone: indexed into a temporary folder (small demos). With an existing
            ``index_dir``: checked against the manifest's corpus hash.
        encoder: model name/path; None = the one recorded in the manifest (a different one is an error).
        faiss_factory: index type when building (a saved index keeps its own).
        pooling, query_prefix, passage_prefix, max_length: encoder settings; None = the manifest's when
            loading, the preset's (E5 by default: ``mean``, ``"query: "``, ``"passage: "``; 256 tokens) when
            building. Given values must match the manifest.
        batch_size: encoder batch size.
        device: encoder device (None = CUDA when available).
        fp16: half-precision encoder on CUDA.
        use_gpu: move the faiss index to the GPUs (needs ``faiss-gpu``).
        gpu_shard: with ``use_gpu`` and several GPUs, split the index across them (each holds ``1/n`` of the
            vectors: what a wiki-18 Flat index, ~64 GB at 768-d, needs) instead of a full copy on each.
        nprobe: IVF cells probed per query (IVF indexes only).
        ef_search: HNSW search breadth (HNSW indexes only).
        shard_size: passages per embedding shard when building.
        preset: encoder preset when building (``e5``, ``bge``, ``minilm``; see
            :class:`~searchr1.retrieval.encoder.TextEncoder`); explicit pooling/prefixes override it.
        mmap: memory-map ``faiss.index`` (``IO_FLAG_MMAP``) instead of reading it into RAM, where faiss supports
            it for the index type (else it is read, with a warning).
        dedup, cache_size: see :class:`~searchr1.retrieval.base.CachedRetriever`.
    """

    def __init__(
        self,
        index_dir: str | None = None,
        corpus: str | None = None,
        encoder: str | None = None,
        faiss_factory: str = "Flat",
        pooling: str | None = None,
        query_prefix: str | None = None,
        passage_prefix: str | None = None,
        max_length: int | None = None,
        batch_size: int = 64,
        device: str | None = None,
        fp16: bool = True,
        use_gpu: bool = False,
        gpu_shard: bool = True,
        nprobe: int | None = None,
        ef_search: int | None = None,
        shard_size: int = 100_000,
        preset: str | None = None,
        mmap: bool = False,
        dedup: bool = True,
        cache_size: int = 0,
    ) -> None:
        super().__init__(dedup=dedup, cache_size=cache_size)
        if index_dir is None and corpus is None:
            raise ValueError("DenseRetriever needs index_dir (a built index folder) or corpus (a .jsonl file)")
        self._tmp = tempfile.TemporaryDirectory() if index_dir is None else None
        folder = Path(index_dir) if index_dir is not None else Path(self._tmp.name)
        pinned = {
            "encoder": encoder,
            "pooling": pooling,
            "query_prefix": query_prefix,
            "passage_prefix": passage_prefix,
            "max_length": max_length,
        }
        runtime = {"batch_size": batch_size, "device": device, "fp16": fp16}
        complete = (folder / MANIFEST_FILE).exists() and IndexManifest.load(folder).complete
        if not complete and corpus is not None:
            build_args = {k: v for k, v in pinned.items() if v is not None}
            build_args["model_name_or_path"] = build_args.pop("encoder", "intfloat/e5-base-v2")
            if preset is not None:
                build_args["preset"] = preset
            self.encoder = TextEncoder(**build_args, **runtime)
            build_dense_index(corpus, str(folder), self.encoder, faiss_factory, shard_size, show_progress=False)
        self.manifest = IndexManifest.load(folder)
        expected_sha = corpus_hash(corpus) if corpus is not None and index_dir is not None else None
        self.manifest.check("dense", corpus_sha256=expected_sha, **pinned)
        if not hasattr(self, "encoder"):
            saved = self.manifest.settings
            self.encoder = TextEncoder(
                saved["encoder"],
                pooling=saved["pooling"],
                query_prefix=saved["query_prefix"],
                passage_prefix=saved["passage_prefix"],
                max_length=saved["max_length"],
                **runtime,
            )
        self.index = read_faiss_index(folder / FAISS_FILE, mmap)
        self._configure(nprobe, ef_search, use_gpu, gpu_shard)
        self.docs = DocStore.load(folder)

    def _configure(self, nprobe: int | None, ef_search: int | None, use_gpu: bool, gpu_shard: bool) -> None:
        if nprobe is not None:
            faiss.extract_index_ivf(self.index).nprobe = nprobe
        if ef_search is not None:
            faiss.downcast_index(self.index).hnsw.efSearch = ef_search
        if use_gpu:
            if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
                raise RuntimeError(
                    "use_gpu=True needs faiss-gpu and a visible GPU; install faiss-gpu or set use_gpu=False"
                )
            options = faiss.GpuMultipleClonerOptions()
            options.shard = gpu_shard
            self.index = faiss.index_cpu_to_all_gpus(self.index, co=options)

    def _search_batch(self, queries: list[str], topk: int) -> list[Hits]:
        emb = self.encoder.encode(queries, is_query=True)  # (B, H)
        scores, rows = self.index.search(emb, min(topk, self.index.ntotal))  # (B, k), (B, k)
        out = []
        for row, sc in zip(rows.tolist(), scores.tolist()):
            if row and min(row) < 0:  # faiss pads with -1 when it finds fewer than k
                kept = [(r, s) for r, s in zip(row, sc) if r >= 0]
                row, sc = [r for r, _ in kept], [s for _, s in kept]
            out.append(Hits(row, sc))
        return out
