"""``retrieval/indexes.py``: index kinds dispatch build/open through the registry; several folders fuse (RRF)."""

from __future__ import annotations

from pathlib import Path

import pytest

from searchr1.retrieval import BM25Retriever, HybridRetriever, IndexManifest
from searchr1.retrieval.indexes import INDEX_KINDS, BuildOptions, OpenOptions, build_index, load_retriever, open_indexes


def test_build_then_open_through_the_registry(tmp_path: Path, hotpot_corpus: Path):
    manifest = build_index("bm25", str(hotpot_corpus), str(tmp_path / "bm25"), BuildOptions(k1=1.2, stemmer="none"))
    assert manifest.kind == "bm25" and manifest.num_docs == 521 and manifest.settings["k1"] == 1.2
    retriever = load_retriever(str(tmp_path / "bm25"), cache_size=8)
    assert isinstance(retriever, BM25Retriever)
    assert retriever.search(["Scott Derrickson director"], topk=1)[0][0].title == "Scott Derrickson"


def test_several_folders_open_as_their_fusion(hotpot_index: Path):
    fused = open_indexes([str(hotpot_index), str(hotpot_index)], rrf_k=5.0, options=OpenOptions(cache_size=4))
    assert isinstance(fused, HybridRetriever)
    single = open_indexes([str(hotpot_index)])
    assert isinstance(single, BM25Retriever)
    query = ["Ed Wood film director"]
    # the fusion of an index with itself ranks exactly as the index does
    assert [p.id for p in fused.search(query, 3)[0]] == [p.id for p in single.search(query, 3)[0]]


def test_unknown_kinds_list_the_registered_ones(tmp_path: Path):
    assert INDEX_KINDS.names() == ["bm25", "dense"]
    with pytest.raises(ValueError, match="unknown index kind 'splade'; valid names: bm25, dense"):
        build_index("splade", "corpus.jsonl", str(tmp_path))
    IndexManifest(kind="splade", corpus_path="c.jsonl", corpus_sha256="0", num_docs=1).save(tmp_path)
    with pytest.raises(ValueError, match="unknown index kind 'splade'; valid: bm25, dense"):
        load_retriever(str(tmp_path))
