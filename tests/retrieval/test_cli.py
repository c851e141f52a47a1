"""CLI: ``searchr1-index build`` (bm25 and dense) then ``searchr1-retrieval serve`` as a real process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from searchr1.retrieval import HTTPRetriever, IndexMismatchError
from searchr1.retrieval.cli import index_main
from searchr1.retrieval.indexes import load_retriever
from searchr1.retrieval.launch import ServerProcess


def test_build_bm25_then_serve(tmp_path: Path, hotpot_corpus: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bm25"
    index_main(["build", "--corpus", str(hotpot_corpus), "--retriever", "bm25", "--out", str(out), "--k1", "1.2"])
    assert "built bm25 index of 521 passages" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["k1"] == 1.2 and manifest["corpus_path"] == str(hotpot_corpus)
    with ServerProcess(out, extra_args=["--topk", "2"], log_path=tmp_path / "log.txt") as server:
        remote = HTTPRetriever(server.url)
        (hits,) = remote.search(["Scott Derrickson director"], topk=3)
        assert hits[0].title == "Scott Derrickson"
        assert remote.health()["retriever"] == "BM25Retriever"


def test_build_dense_with_local_encoder(tmp_path: Path, small_corpus: Path, tiny_encoder_dir: Path) -> None:
    out = tmp_path / "dense"
    args = ["build", "--corpus", str(small_corpus), "--retriever", "dense", "--out", str(out)]
    index_main([*args, "--encoder", str(tiny_encoder_dir), "--faiss", "HNSW8", "--max-length", "32"])
    retriever = load_retriever(str(out), ef_search=64)
    assert type(retriever).__name__ == "DenseRetriever" and len(retriever) == 250
    assert len(retriever.search(["Ed Wood"], topk=3)[0]) == 3
    with pytest.raises(IndexMismatchError, match="faiss_factory"):  # resuming with other settings
        index_main([*args, "--encoder", str(tiny_encoder_dir), "--faiss", "Flat", "--max-length", "32"])


def test_bad_cli_arguments(tmp_path: Path, hotpot_corpus: Path) -> None:
    with pytest.raises(SystemExit):
        index_main(["build", "--corpus", str(hotpot_corpus), "--retriever", "splade", "--out", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="not an index folder"):
        load_retriever(str(tmp_path))


@pytest.mark.slow
def test_serve_two_indexes_is_their_hybrid(tmp_path: Path, hotpot_corpus: Path, tiny_encoder_dir: Path) -> None:
    from searchr1.retrieval import BM25Retriever, HybridRetriever

    bm25_dir, dense_dir = tmp_path / "bm25", tmp_path / "dense"
    index_main(["build", "--corpus", str(hotpot_corpus), "--retriever", "bm25", "--out", str(bm25_dir)])
    args = ["build", "--corpus", str(hotpot_corpus), "--retriever", "dense", "--out", str(dense_dir)]
    index_main([*args, "--encoder", str(tiny_encoder_dir), "--max-length", "32", "--device", "cpu"])
    local = HybridRetriever([BM25Retriever(index_dir=str(bm25_dir)), load_retriever(str(dense_dir), device="cpu")])
    queries = ["Scott Derrickson director", "Ed Wood film", "Shirley Temple"]
    extra = ["--index", str(dense_dir), "--device", "cpu", "--mmap"]
    with ServerProcess(bm25_dir, extra_args=extra, log_path=tmp_path / "log.txt") as server:
        remote = HTTPRetriever(server.url)
        assert remote.health()["retriever"] == "HybridRetriever"
        got = remote.search(queries, topk=4)
    want = local.search(queries, topk=4)
    assert [[p.id for p in r] for r in got] == [[p.id for p in r] for r in want]
    assert [p.score for r in got for p in r] == pytest.approx([p.score for r in want for p in r])
