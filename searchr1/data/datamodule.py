"""QA data for RL training: a resumable, rank-sharded stream of prompt batches and per-source evaluation loaders.

Training (:class:`TrainBatchStream`): the train files are concatenated (mixing sources), each epoch is one
permutation of all rows drawn with ``torch.Generator().manual_seed(seed + epoch)`` (identical on every rank), and
global step ``b`` takes the contiguous slice ``[b*G, (b+1)*G)`` of it, ``G = batch_size * world_size``; rank ``r``
gets the ``r``-th ``batch_size`` piece. So one rank with ``2B`` sees exactly what two ranks with ``B`` see together.
When ``G`` does not divide the row count the permutation is padded by wrapping around to its start (a few rows
appear twice in that epoch's last step) so every rank gets the same number of batches; ``drop_last=True`` drops
the partial step instead. The stream is infinite (epochs repeat), which suits RL run by ``max_steps``; use an
integer ``val_check_interval``. It is an ``IterableDataset``, so Lightning injects no ``DistributedSampler``.

Resuming: ``Lightning`` fetches one batch ahead, so the stream cannot count what it yielded. The training module
calls :meth:`QADataModule.mark_batch_consumed` once per finished ``training_step``; ``state_dict()`` is
``{"epoch", "batches_consumed"}`` (saved in Lightning checkpoints) and a new iterator starts at the first
unconsumed batch. Resuming requires the same data, seed and ``batch_size * world_size``.

Evaluation (:func:`shard_eval`): each source's rows are cut into ``world_size * K`` contiguous batches whose
sizes differ by at most one (larger first), ``K = ceil(n / (world_size * batch_size))``; rank ``r`` takes batches
``[r*K, (r+1)*K)``. So no row is duplicated and every rank runs the same number of batches (collective ops in
``validation_step`` cannot hang). Only when ``n < world_size * K`` (tiny sets, or ``batch_size == 1``) would a batch
be empty; then the set is topped up with wrapped copies marked ``metadata["is_padding"] = True``, which metrics
must skip.
Files whose rows carry several ``data_source`` values (Search-R1's merged ``test.parquet``) are split per source.

Batches are ``list[QAExample]`` (text). :meth:`QADataModule.transfer_batch_to_device` returns them unchanged:
Lightning's default transfer raises on frozen dataclasses. It is the only override of that hook (``SearchR1Module``
has none: with one in both, Lightning warns), so any LightningModule trains on these batches. Rank and world size
are read from the trainer in ``setup``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, IterableDataset

from searchr1.data.qa import DataError, DataSource, QAExample, check_unique_ids, parse_source, read_located


def _identity(batch: list[QAExample]) -> list[QAExample]:
    return batch


class TrainBatchStream(IterableDataset):
    """Infinite, resumable stream of this rank's training batches (see the module docstring).

    Args:
        examples: all training rows (every rank passes the same list).
        batch_size: prompts per rank per step.
        rank: this process's global rank.
        world_size: number of ranks.
        seed: base seed; epoch ``e`` is shuffled with ``seed + e``.
        shuffle: False keeps file order every epoch.
        drop_last: drop an epoch's last, partial global step instead of padding it by wrapping.
    """

    def __init__(
        self,
        examples: list[QAExample],
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need batch_size >= 1 and 0 <= rank < world_size; got {batch_size}, {rank}, {world_size}")
        self.examples = examples
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.epoch = 0
        self.batches_consumed = 0
        if self.batches_per_epoch == 0:
            raise DataError(
                f"the train set has {len(examples)} rows, fewer than batch_size * world_size = {self.global_batch}. "
                "Fix: lower batch_size, add data, or set drop_last=False"
            )

    @property
    def global_batch(self) -> int:
        """Prompts per optimizer step over all ranks."""
        return self.batch_size * self.world_size

    @property
    def batches_per_epoch(self) -> int:
        """Steps per pass over the data (every rank gets this many batches)."""
        n = len(self.examples)
        return n // self.global_batch if self.drop_last else math.ceil(n / self.global_batch)

    def epoch_order(self, epoch: int) -> list[int]:
        """Row indices of one epoch over all ranks, padded by wrapping to ``batches_per_epoch * global_batch``."""
        n = len(self.examples)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(n, generator=generator).tolist()
        else:
            order = list(range(n))
        total = self.batches_per_epoch * self.global_batch
        return [order[i % n] for i in range(total)]

    def batch_at(self, epoch: int, step: int, order: list[int] | None = None) -> list[QAExample]:
        """This rank's batch for global step ``step`` of ``epoch``."""
        order = self.epoch_order(epoch) if order is None else order
        start = step * self.global_batch + self.rank * self.batch_size
        return [self.examples[i] for i in order[start : start + self.batch_size]]

    def __iter__(self):
        epoch, step = self.epoch, self.batches_consumed
        while True:
            order = self.epoch_order(epoch)
            for s in range(step, self.batches_per_epoch):
                yield self.batch_at(epoch, s, order)
            epoch, step = epoch + 1, 0

    def mark_batch_consumed(self) -> None:
        """Record that one more batch was trained on (called once per finished training step)."""
        self.batches_consumed += 1
        if self.batches_consumed >= self.batches_per_epoch:
            self.epoch, self.batches_consumed = self.epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "batches_consumed"}``: the position of the next unconsumed batch."""
        return {"epoch": self.epoch, "batches_consumed": self.batches_consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a :meth:`state_dict` (same data, seed and global batch size)."""
        epoch, consumed = int(state["epoch"]), int(state["batches_consumed"])
        if epoch < 0 or not 0 <= consumed < self.batches_per_epoch:
            raise DataError(
                f"train stream state {state} does not fit {self.batches_per_epoch} batches per epoch. "
                "Fix: resume with the same train files, batch_size and number of devices"
            )
        self.epoch, self.batches_consumed = epoch, consumed


class EvalBatches(IterableDataset):
    """A fixed list of evaluation batches (iterable, so Lightning adds no sampler; ``num_batches`` holds the count).

    No ``__len__``: Lightning warns about every sized ``IterableDataset`` (its multi-worker caveat does not apply
    to a fixed list read in-process) and reads an unsized one to its end.
    """

    def __init__(self, batches: list[list[QAExample]]) -> None:
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    @property
    def num_batches(self) -> int:
        return len(self.batches)


def shard_eval(examples: list[QAExample], batch_size: int, rank: int, world_size: int) -> list[list[QAExample]]:
    """This rank's evaluation batches: contiguous, near-equal batches, the same count on every rank.

    Args:
        examples: one source's rows, in order.
        batch_size: maximum prompts per batch.
        rank: this process's rank.
        world_size: number of ranks.

    Returns:
        ``K = ceil(n / (world_size * batch_size))`` batches; padding copies (``metadata["is_padding"]``) appear
        only when ``n < world_size * K``.
    """
    n = len(examples)
    per_rank = math.ceil(n / (world_size * batch_size))
    slots = world_size * per_rank
    rows: list[QAExample] = list(examples)
    for i in range(max(0, slots - n)):
        source = examples[i % n]
        rows.append(replace(source, metadata={**source.metadata, "is_padding": True}))
    base, extra = divmod(len(rows), slots)  # the first `extra` batches hold one row more
    bounds = [j * base + min(j, extra) for j in range(slots + 1)]
    batches = [rows[bounds[j] : bounds[j + 1]] for j in range(slots)]
    return batches[rank * per_rank : (rank + 1) * per_rank]


def _subset(examples: list[QAExample], limit: int | None, seed: int) -> list[QAExample]:
    """A seeded random subset of at most ``limit`` rows, in original order (all rows when ``limit`` is None)."""
    if limit is None or len(examples) <= limit:
        return examples
    keep = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed))[:limit]
    return [examples[i] for i in sorted(keep.tolist())]


def _group_by_source(examples: list[QAExample]) -> dict[str, list[QAExample]]:
    groups: dict[str, list[QAExample]] = {}
    for example in examples:
        groups.setdefault(example.data_source, []).append(example)
    return groups


class QADataModule(LightningDataModule):
    """Question batches for RL training and per-benchmark evaluation.

    Args:
        train_files: training sources, mixed into one stream (paths, ``hf://`` specs or ``DataSource``).
        val_files: validation sources; one loader per ``data_source`` (see ``val_sources``).
        test_files: test sources, handled like ``val_files`` (``test_sources``).
        batch_size: prompts per rank per training step.
        val_batch_size: prompts per rank per evaluation batch (default: ``batch_size``).
        seed: shuffling seed (epoch ``e`` uses ``seed + e``); also picks the ``max_*_samples`` subsets.
        shuffle: shuffle the training rows each epoch.
        max_train_samples: keep a seeded random subset of this many rows of the whole training mix.
        max_val_samples: keep a seeded random subset of this many rows per validation/test source.
        drop_last: drop each epoch's last partial training step instead of padding it by wrapping.
    """

    def __init__(
        self,
        train_files: list[str | DataSource] | None = None,
        val_files: list[str | DataSource] | None = None,
        test_files: list[str | DataSource] | None = None,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        seed: int = 0,
        shuffle: bool = True,
        max_train_samples: int | None = None,
        max_val_samples: int | None = None,
        drop_last: bool = False,
    ) -> None:
        super().__init__()
        if batch_size < 1 or (val_batch_size is not None and val_batch_size < 1):
            raise ValueError(f"batch_size and val_batch_size must be >= 1, got {batch_size} and {val_batch_size}")
        self.train_sources_spec = [parse_source(s) for s in train_files or []]
        self.val_sources_spec = [parse_source(s) for s in val_files or []]
        self.test_sources_spec = [parse_source(s) for s in test_files or []]
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.max_train_samples = max_train_samples
        self.max_val_samples = max_val_samples
        self.drop_last = drop_last
        self.train_stream: TrainBatchStream | None = None
        self.val_sets: dict[str, list[QAExample]] = {}
        self.test_sets: dict[str, list[QAExample]] = {}
        self._pending_state: dict[str, int] | None = None
        self.rank, self.world_size = 0, 1

    @property
    def val_sources(self) -> list[str]:
        """Validation benchmark names, in ``val_dataloader()`` order (``dataloader_idx`` → name)."""
        return list(self.val_sets)

    @property
    def test_sources(self) -> list[str]:
        """Test benchmark names, in ``test_dataloader()`` order."""
        return list(self.test_sets)

    def _read_all(self, sources: list[DataSource]) -> list[QAExample]:
        located = [pair for source in sources for pair in read_located(source)]
        check_unique_ids(located)
        return [example for example, _ in located]

    def _read_eval(self, sources: list[DataSource]) -> dict[str, list[QAExample]]:
        groups = _group_by_source(self._read_all(sources))
        return {name: _subset(rows, self.max_val_samples, self.seed) for name, rows in groups.items()}

    def setup(self, stage: str | None = None) -> None:
        """Read and validate every file of ``stage`` (all rows, before any model work) and build the loaders."""
        trainer = self.trainer
        if trainer is not None:
            self.rank, self.world_size = trainer.global_rank, trainer.world_size
        if stage in (None, "fit") and self.train_sources_spec:
            examples = _subset(self._read_all(self.train_sources_spec), self.max_train_samples, self.seed)
            state = self.state_dict()  # a restored state, or the old stream's position when set up again
            self.train_stream = TrainBatchStream(
                examples, self.batch_size, self.rank, self.world_size, self.seed, self.shuffle, self.drop_last
            )
            self.train_stream.load_state_dict(state)
            self._pending_state = None
        if stage in (None, "fit", "validate") and self.val_sources_spec:
            self.val_sets = self._read_eval(self.val_sources_spec)
        if stage in (None, "test") and self.test_sources_spec:
            self.test_sets = self._read_eval(self.test_sources_spec)

    def train_dataloader(self) -> DataLoader:
        """The infinite training stream of ``list[QAExample]`` batches (in-process: the stream holds the state)."""
        if self.train_stream is None:
            raise RuntimeError("no training data: pass train_files and call setup('fit') first")
        return DataLoader(self.train_stream, batch_size=None, collate_fn=_identity, num_workers=0)

    def _eval_loaders(self, sets: dict[str, list[QAExample]]) -> list[DataLoader]:
        return [
            DataLoader(
                EvalBatches(shard_eval(rows, self.val_batch_size, self.rank, self.world_size)),
                batch_size=None,
                collate_fn=_identity,
            )
            for rows in sets.values()
        ]

    def val_dataloader(self) -> list[DataLoader]:
        """One non-shuffled loader per validation source, in ``val_sources`` order."""
        return self._eval_loaders(self.val_sets)

    def test_dataloader(self) -> list[DataLoader]:
        """One non-shuffled loader per test source, in ``test_sources`` order."""
        return self._eval_loaders(self.test_sets)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Batches are text (``list[QAExample]``): nothing to move. Lightning's default would also reject the frozen
        dataclasses (``apply_to_collection`` raises on them); tokenization happens later, in the rollout."""
        return batch

    def mark_batch_consumed(self) -> None:
        """Call once per finished ``training_step`` (``self.trainer.datamodule.mark_batch_consumed()``)."""
        if self.train_stream is None:
            raise RuntimeError("mark_batch_consumed() before setup('fit'): there is no training stream")
        self.train_stream.mark_batch_consumed()

    def state_dict(self) -> dict[str, Any]:
        """``{"epoch", "batches_consumed"}`` of the training stream (saved in Lightning checkpoints)."""
        if self.train_stream is not None:
            return self.train_stream.state_dict()
        return dict(self._pending_state or {"epoch": 0, "batches_consumed": 0})

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the training position; before ``setup`` it is applied when the stream is built."""
        state = {"epoch": int(state_dict["epoch"]), "batches_consumed": int(state_dict["batches_consumed"])}
        if self.train_stream is not None:
            self.train_stream.load_state_dict(state)
        else:
            self._pending_state = state
