"""Dense path with a tiny random BERT: faiss Flat equals brute force, HNSW/IVF agree, resume, manifest."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from searchr1.retrieval import BM25Retriever, IndexMismatchError
from searchr1.retrieval.corpus import iter_corpus
from searchr1.retrieval.dense import DenseRetriever, build_dense_index
from searchr1.retrieval.encoder import TextEncoder, mean_pool

QUERIES = ["Ed Wood film director", "Scott Derrickson nationality", "Kiss and Tell 1945 film", "Shirley Temple"]


@pytest.fixture(scope="module")
def flat_index(tmp_path_factory: pytest.TempPathFactory, tiny_encoder_dir: Path, small_corpus: Path) -> Path:
    out = tmp_path_factory.mktemp("dense_flat")
    encoder = TextEncoder(str(tiny_encoder_dir), max_length=32)
    build_dense_index(str(small_corpus), str(out), encoder, "Flat", shard_size=100, show_progress=False)
    return out


def test_mean_pool_hand_computed() -> None:
    import torch

    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])  # (1, 3, 2); last token is pad
    mask = torch.tensor([[1, 1, 0]])
    assert mean_pool(hidden, mask).tolist() == [[2.0, 3.0]]  # ((1+3)/2, (2+4)/2)


def test_flat_equals_brute_force(flat_index: Path, tiny_encoder_dir: Path, small_corpus: Path) -> None:
    retriever = DenseRetriever(index_dir=str(flat_index))
    assert retriever.manifest.settings["faiss_factory"] == "Flat" and len(retriever) == 250
    encoder = TextEncoder(str(tiny_encoder_dir), max_length=32)
    records = list(iter_corpus(small_corpus))
    passages = encoder.encode([r.contents for r in records], is_query=False)  # (N, H)
    queries = encoder.encode(QUERIES, is_query=True)  # (B, H)
    np.testing.assert_allclose(np.linalg.norm(passages, axis=1), 1.0, rtol=1e-5)
    scores = queries @ passages.T  # (B, N)
    results = retriever.search(QUERIES, topk=5)
    for q, hits in enumerate(results):
        expected = np.argsort(-scores[q], kind="stable")[:5]
        np.testing.assert_allclose([p.score for p in hits], scores[q, expected], rtol=1e-4, atol=1e-5)
        assert {p.id for p in hits[:1]} == {records[expected[0]].id}


@pytest.mark.parametrize(
    ("factory", "kwargs", "min_overlap"), [("HNSW16", {"ef_search": 256}, 0.95), ("IVF8,Flat", {"nprobe": 8}, 1.0)]
)
def test_hnsw_and_ivf_agree_with_flat(
    tmp_path: Path,
    flat_index: Path,
    tiny_encoder_dir: Path,
    small_corpus: Path,
    factory: str,
    kwargs: dict,
    min_overlap: float,
) -> None:
    encoder = TextEncoder(str(tiny_encoder_dir), max_length=32)
    build_dense_index(str(small_corpus), str(tmp_path), encoder, factory, shard_size=100, show_progress=False)
    approx = DenseRetriever(index_dir=str(tmp_path), **kwargs).search(QUERIES, topk=5)
    exact = DenseRetriever(index_dir=str(flat_index)).search(QUERIES, topk=5)
    overlap = np.mean([len({p.id for p in a} & {p.id for p in e}) / 5 for a, e in zip(approx, exact)])
    assert overlap >= min_overlap


def test_resume_skips_existing_shards(tmp_path: Path, flat_index: Path, tiny_encoder_dir: Path, small_corpus: Path):
    encoder = TextEncoder(str(tiny_encoder_dir), max_length=32)
    build_dense_index(str(small_corpus), str(tmp_path), encoder, "Flat", shard_size=100, show_progress=False)
    shards = sorted((tmp_path / "embeddings").glob("shard_*.npy"))
    assert len(shards) == 3  # 250 passages / 100
    before = {p.name: p.stat().st_mtime_ns for p in shards[:2]}
    # simulate a crash after two shards: third shard and index missing, manifest incomplete
    shards[2].unlink()
    (tmp_path / "faiss.index").unlink()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["complete"] = False
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexMismatchError, match="did not finish"):
        DenseRetriever(index_dir=str(tmp_path))
    os.utime(shards[0], ns=(1, 1))  # a re-encoded shard would get a fresh mtime
    before[shards[0].name] = 1
    build_dense_index(str(small_corpus), str(tmp_path), encoder, "Flat", shard_size=100, show_progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in shards[:2]} == before
    resumed = DenseRetriever(index_dir=str(tmp_path)).search(QUERIES, topk=3)
    assert resumed == DenseRetriever(index_dir=str(flat_index)).search(QUERIES, topk=3)


def test_failed_add_phase_resumes_from_its_checkpoint(
    tmp_path: Path, tiny_encoder_dir: Path, small_corpus: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A build that dies while adding shards (here: shard 6 of 10 holds vectors of the wrong width, as a
    half-written or foreign shard would) keeps its add-phase checkpoint; once the shard is good again the
    rerun continues after the last checkpoint (4 shards: checkpoints at 0, 2 and 4 shards, as the index doubles)
    instead of re-adding, and the index equals a clean build's."""
    encoder = TextEncoder(str(tiny_encoder_dir), max_length=32)
    clean, broken = tmp_path / "clean", tmp_path / "broken"
    for out in (clean, broken):
        build_dense_index(str(small_corpus), str(out), encoder, "Flat", shard_size=25, show_progress=False)
    shard = broken / "embeddings" / "shard_00005.npy"
    good = np.load(shard)
    np.save(shard, good[:, :7])  # the add of this shard fails inside faiss
    (broken / "faiss.index").unlink()
    manifest = json.loads((broken / "manifest.json").read_text())
    (broken / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    with pytest.raises((AssertionError, RuntimeError, ValueError)):
        build_dense_index(str(small_corpus), str(broken), encoder, "Flat", shard_size=25, show_progress=False)
    assert json.loads((broken / "faiss.partial.json").read_text()) == {"shards": 4, "ntotal": 100}
    np.save(shard, good)
    with caplog.at_level("INFO", logger="searchr1.retrieval.dense"):
        build_dense_index(str(small_corpus), str(broken), encoder, "Flat", shard_size=25, show_progress=False)
    assert "resuming the add phase after shard 4 of 10 (100 vectors)" in caplog.text
    assert not (broken / "faiss.partial.index").exists() and not (broken / "faiss.partial.json").exists()
    resumed = DenseRetriever(index_dir=str(broken)).search(QUERIES, topk=5)
    assert resumed == DenseRetriever(index_dir=str(clean)).search(QUERIES, topk=5)


def test_manifest_mismatches(tmp_path: Path, flat_index: Path, tiny_encoder_dir: Path, small_corpus: Path) -> None:
    with pytest.raises(IndexMismatchError, match="encoder="):
        DenseRetriever(index_dir=str(flat_index), encoder="intfloat/e5-base-v2")
    with pytest.raises(IndexMismatchError, match="max_length="):
        DenseRetriever(index_dir=str(flat_index), max_length=512)
    with pytest.raises(IndexMismatchError, match="built for retriever 'dense'"):
        BM25Retriever(index_dir=str(flat_index))
    encoder = TextEncoder(str(tiny_encoder_dir), max_length=32)
    with pytest.raises(IndexMismatchError, match="other settings"):
        build_dense_index(str(small_corpus), str(flat_index), encoder, "HNSW32", shard_size=100, show_progress=False)
    with pytest.raises(ValueError, match="bad faiss factory"):
        build_dense_index(str(small_corpus), str(tmp_path), encoder, "NotAnIndex", show_progress=False)


def test_in_memory_from_corpus(tiny_encoder_dir: Path, small_corpus: Path) -> None:
    retriever = DenseRetriever(corpus=str(small_corpus), encoder=str(tiny_encoder_dir), max_length=32)
    out = retriever.search(QUERIES + QUERIES, topk=2)
    assert out[:4] == out[4:] and all(len(r) == 2 for r in out)
    assert retriever.metrics()["unique_queries"] == 4


def test_presets_set_pooling_and_prefixes(tiny_encoder_dir: Path) -> None:
    from searchr1.retrieval.encoder import encoder_preset

    assert encoder_preset("minilm") == {"pooling": "mean", "query_prefix": "", "passage_prefix": ""}
    assert encoder_preset("bge", query_prefix="q: ")["pooling"] == "cls"
    enc = TextEncoder(str(tiny_encoder_dir), preset="minilm", max_length=32)
    assert (enc.pooling, enc.query_prefix, enc.passage_prefix) == ("mean", "", "")
    e5 = TextEncoder(str(tiny_encoder_dir), max_length=32)  # e5 is the default preset
    assert (e5.pooling, e5.query_prefix, e5.passage_prefix) == ("mean", "query: ", "passage: ")
    with pytest.raises(ValueError, match="unknown encoder preset 'e6'; valid names: bge, e5, minilm"):
        TextEncoder(str(tiny_encoder_dir), preset="e6")


def test_mmap_load_searches_like_read(flat_index: Path) -> None:
    read = DenseRetriever(index_dir=str(flat_index))
    mapped = DenseRetriever(index_dir=str(flat_index), mmap=True)
    assert mapped.search_hits(QUERIES, 5) == read.search_hits(QUERIES, 5)
