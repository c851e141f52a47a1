"""QADataModule and its streams: shuffling, rank sharding, resuming, source mixing and per-source evaluation."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from searchr1.data import DataError, DataSource, QADataModule, read_examples, shard_eval, to_search_r1_record
from searchr1.data.datamodule import TrainBatchStream


def _ids(batch) -> list[str]:
    return [e.id for e in batch]


def _take(iterator, k: int) -> list[list[str]]:
    return [_ids(next(iterator)) for _ in range(k)]


@pytest.fixture
def hotpot(data_dir: Path) -> str:
    return str(data_dir / "hotpotqa_dev_sample/questions.jsonl")  # 53 rows


@pytest.fixture
def nq(data_dir: Path) -> str:
    return str(data_dir / "flashrag_sample/nq_test.jsonl")  # 17 rows


def _stream_ids(path: str, **kwargs) -> list[list[str]]:
    dm = QADataModule(train_files=[path], **kwargs)
    dm.setup("fit")
    stream = dm.train_stream
    return _take(iter(dm.train_dataloader()), stream.batches_per_epoch * 2)


def test_shuffle_is_deterministic_per_seed(hotpot: str) -> None:
    a = _stream_ids(hotpot, batch_size=4, seed=3)
    assert a == _stream_ids(hotpot, batch_size=4, seed=3)
    assert a != _stream_ids(hotpot, batch_size=4, seed=4)
    per_epoch = math.ceil(53 / 4)
    epoch0, epoch1 = a[:per_epoch], a[per_epoch:]
    assert epoch0 != epoch1  # epoch e is shuffled with seed + e
    # epoch 0 of seed 3 is torch.randperm(53) under manual_seed(3), padded by wrapping to 56 rows
    rows = read_examples(hotpot)
    perm = torch.randperm(53, generator=torch.Generator().manual_seed(3)).tolist()
    expected = [rows[i].id for i in perm + perm[:3]]
    assert [i for batch in epoch0 for i in batch] == expected


def test_no_shuffle_keeps_file_order(nq: str) -> None:
    batches = _stream_ids(nq, batch_size=5, shuffle=False)
    rows = [e.id for e in read_examples(nq)]
    # 17 rows, 4 batches of 5: the last batch wraps to the first 3 rows; epoch 1 repeats epoch 0
    assert batches[:4] == [rows[0:5], rows[5:10], rows[10:15], rows[15:17] + rows[0:3]]
    assert batches[4:] == batches[:4]


@pytest.mark.parametrize("drop_last", [False, True])
def test_two_ranks_get_disjoint_rows_and_equal_batch_counts(hotpot: str, drop_last: bool) -> None:
    rows = read_examples(hotpot)
    streams = [TrainBatchStream(rows, 4, rank=r, world_size=2, seed=1, drop_last=drop_last) for r in range(2)]
    per_epoch = streams[0].batches_per_epoch
    assert per_epoch == (6 if drop_last else 7)  # 53 rows / global batch 8
    epochs = [_take(iter(s), per_epoch) for s in streams]
    assert all(len(b) == 4 for e in epochs for b in e)
    seen = [[i for b in e for i in b] for e in epochs]
    if drop_last:
        assert not set(seen[0]) & set(seen[1])
        assert len(set(seen[0]) | set(seen[1])) == 48
    else:
        # 56 slots for 53 rows: every row appears, exactly 3 (the wrapped ones, on rank 1's last batch) twice
        everything = seen[0] + seen[1]
        assert set(everything) == {e.id for e in rows}
        assert len(everything) - len(set(everything)) == 3
        assert not set(seen[0]) & set(seen[1][: len(seen[1]) - 3])
    # step b over two ranks of 4 == step b of one rank with 8
    single = _take(iter(TrainBatchStream(rows, 8, seed=1, drop_last=drop_last)), per_epoch)
    assert [a + b for a, b in zip(epochs[0], epochs[1])] == single


def test_resume_continues_at_next_unconsumed_batch(nq: str) -> None:
    kwargs = dict(train_files=[nq], batch_size=4, seed=7)
    reference = QADataModule(**kwargs)
    reference.setup("fit")
    uninterrupted = _take(iter(reference.train_dataloader()), 12)  # 5 batches per epoch: crosses two epochs

    for k in (0, 3, 5, 7):
        dm = QADataModule(**kwargs)
        dm.setup("fit")
        it = iter(dm.train_dataloader())
        for _ in range(k):
            next(it)
            dm.mark_batch_consumed()
        next(it)  # Lightning prefetches one batch ahead; it was never trained on
        state = dm.state_dict()
        assert state == {"epoch": k // 5, "batches_consumed": k % 5}

        after_setup = QADataModule(**kwargs)
        after_setup.setup("fit")
        after_setup.load_state_dict(state)
        before_setup = QADataModule(**kwargs)
        before_setup.load_state_dict(state)  # e.g. restored before setup: applied when the stream is built
        before_setup.setup("fit")
        for resumed in (after_setup, before_setup):
            assert _take(iter(resumed.train_dataloader()), 3) == uninterrupted[k : k + 3]


def test_setting_up_again_keeps_the_position(nq: str) -> None:
    dm = QADataModule(train_files=[nq], batch_size=4, seed=2)
    dm.setup("fit")
    it = iter(dm.train_dataloader())
    for _ in range(6):
        next(it)
        dm.mark_batch_consumed()
    expected = _ids(next(it))
    dm.setup("fit")  # e.g. a second trainer.fit with the same data module
    assert dm.state_dict() == {"epoch": 1, "batches_consumed": 1}
    assert _ids(next(iter(dm.train_dataloader()))) == expected


def test_bad_resume_state_is_rejected(nq: str) -> None:
    dm = QADataModule(train_files=[nq], batch_size=4)
    dm.setup("fit")
    with pytest.raises(DataError, match="same train files, batch_size and number of devices"):
        dm.load_state_dict({"epoch": 0, "batches_consumed": 5})


def test_mixing_two_train_sources(nq: str, data_dir: Path) -> None:
    bamboogle = DataSource(str(data_dir / "bamboogle/questions.jsonl"), data_source="bamboogle")
    dm = QADataModule(train_files=[nq, bamboogle], batch_size=16, seed=0)
    dm.setup("fit")
    assert dm.train_stream.batches_per_epoch == math.ceil((17 + 125) / 16)
    it = iter(dm.train_dataloader())
    epoch = [e for _ in range(dm.train_stream.batches_per_epoch) for e in next(it)]
    keys = {(e.data_source, e.id) for e in epoch}
    assert len(keys) == 142  # every row of both sources appears in one epoch
    assert {s for s, _ in keys} == {"nq_test", "bamboogle"}
    # rows of both sources are interleaved by the shuffle, not appended one after the other
    first_batch_sources = {e.data_source for e in epoch[:16]}
    assert first_batch_sources == {"nq_test", "bamboogle"}


def test_max_train_samples_is_a_seeded_subset(hotpot: str) -> None:
    dm = QADataModule(train_files=[hotpot], batch_size=2, max_train_samples=10, seed=5)
    dm.setup("fit")
    ids = [e.id for e in dm.train_stream.examples]
    all_ids = [e.id for e in read_examples(hotpot)]
    assert len(ids) == 10 and ids == [i for i in all_ids if i in set(ids)]  # original order kept
    again = QADataModule(train_files=[hotpot], batch_size=2, max_train_samples=10, seed=5)
    again.setup("fit")
    assert [e.id for e in again.train_stream.examples] == ids


def test_duplicate_ids_across_files_of_one_source(tmp_path: Path, nq: str) -> None:
    copy = tmp_path / "nq_test.jsonl"  # same stem → same data_source, same ids
    copy.write_text(Path(nq).read_text())
    dm = QADataModule(train_files=[nq, str(copy)], batch_size=2)
    with pytest.raises(DataError, match=rf"{copy}:1: duplicate id 'test_0' .*first at {nq}:1"):
        dm.setup("fit")


def test_too_few_rows_for_drop_last(nq: str) -> None:
    dm = QADataModule(train_files=[nq], batch_size=32, drop_last=True)
    with pytest.raises(DataError, match="fewer than batch_size"):
        dm.setup("fit")


@pytest.mark.parametrize(("n", "batch_size", "world_size"), [(53, 4, 2), (17, 5, 3), (125, 8, 4), (7, 1, 2)])
def test_eval_shards_cover_rows_once_with_equal_batch_counts(data_dir: Path, n: int, batch_size: int, world_size: int):
    rows = read_examples(str(data_dir / "triviaqa_sample/questions.jsonl"))[:n]  # 200 rows
    shards = [shard_eval(rows, batch_size, r, world_size) for r in range(world_size)]
    per_rank = math.ceil(n / (world_size * batch_size))
    assert all(len(s) == per_rank for s in shards)
    assert all(1 <= len(b) <= batch_size for s in shards for b in s)
    flat = [e for s in shards for b in s for e in b]
    real = [e for e in flat if not e.metadata.get("is_padding")]
    assert [e.id for e in real] == [e.id for e in rows]  # every row once, in order, contiguous by rank
    assert len(flat) - len(real) == max(0, world_size * per_rank - n)  # padding only for (7, 1, 2): one copy


def test_val_loaders_one_per_source_in_order(tmp_path: Path, data_dir: Path, nq: str) -> None:
    # Search-R1's merged test.parquet: several data_sources in one file → one loader each
    merged = []
    for name in ("popqa", "musique"):
        rows = read_examples(DataSource(str(data_dir / f"{name}_sample/questions.jsonl"), data_source=name))[:9]
        merged += [to_search_r1_record(e, "test", i) for i, e in enumerate(rows)]
    path = tmp_path / "test.parquet"
    pq.write_table(pa.Table.from_pylist(merged), path)
    dm = QADataModule(val_files=[nq, str(path)], test_files=[str(path)], batch_size=4, val_batch_size=5)
    dm.setup("validate")
    assert dm.val_sources == ["nq_test", "popqa", "musique"]
    loaders = dm.val_dataloader()
    assert [loader.dataset.num_batches for loader in loaders] == [4, 2, 2]
    batches = [list(loader) for loader in loaders]
    assert [e.id for b in batches[0] for e in b] == [e.id for e in read_examples(nq)]
    assert {e.data_source for b in batches[2] for e in b} == {"musique"}
    assert batches[1] == list(dm.val_dataloader()[1])  # not shuffled
    dm.setup("test")
    assert dm.test_sources == ["popqa", "musique"] and len(dm.test_dataloader()) == 2


def test_max_val_samples_per_source(hotpot: str, nq: str) -> None:
    dm = QADataModule(val_files=[hotpot, nq], batch_size=4, max_val_samples=10)
    dm.setup("validate")
    assert {name: len(rows) for name, rows in dm.val_sets.items()} == {"hotpotqa_dev_sample": 10, "nq_test": 10}
