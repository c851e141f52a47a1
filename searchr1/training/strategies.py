"""``FSDP2Strategy``: Lightning's ``ModelParallelStrategy`` set up for pure data-parallel FSDP2, named ``fsdp2``.

``ModelParallelStrategy`` (FSDP2 + tensor parallel) is the Lightning strategy that runs ``fully_shard`` models,
on GPUs (NCCL) and on CPU ranks (gloo), so the sharded path is tested for real without GPUs. Its default mesh is
"data parallel across nodes, tensor parallel within a node"; this subclass makes every rank a data-parallel rank
(``data_parallel_size`` = world size, ``tensor_parallel_size`` = 1), which is what ``SearchR1Module`` shards for.
``SearchR1Module.configure_model`` applies ``fully_shard`` (see :mod:`searchr1.training.sharding`).

Sharded checkpoints are crash-safe (:mod:`searchr1.training.sharded_checkpoint`): written to a hidden temp folder,
renamed into place once every rank has written its part, with a completeness marker that a resume checks.

Use ``--trainer.strategy=fsdp2`` (registered name) or ``class_path: searchr1.training.strategies.FSDP2Strategy``.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from lightning.pytorch.strategies import ModelParallelStrategy, StrategyRegistry

from searchr1.training import sharded_checkpoint

DEFAULT_TIMEOUT_SECONDS = 600.0  # a hung rank stops the run in 10 minutes, not torch's 30


class FSDP2Strategy(ModelParallelStrategy):
    """Data-parallel FSDP2 over all ranks (all nodes) through ``ModelParallelStrategy``.

    Args:
        save_distributed_checkpoint: each rank writes its own shard (a checkpoint folder); False gathers the
            full state on rank 0 into one file (needs the whole model in one process's memory).
        process_group_backend: ``nccl``/``gloo``; default by device.
        timeout_seconds: process-group timeout; a rank waiting longer in a collective fails instead of hanging,
            and the run names the rank that did not answer (tests set a few seconds; None: torch's 30 minutes).
            It must exceed the longest wait of one rank for the others: rank 0 writing an HF export or
            checkpoint metadata, ranks whose rollouts end at different times.
    """

    def __init__(
        self,
        save_distributed_checkpoint: bool = True,
        process_group_backend: str | None = None,
        timeout_seconds: float | None = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        kwargs = {} if timeout_seconds is None else {"timeout": timedelta(seconds=timeout_seconds)}
        super().__init__(
            data_parallel_size="auto",
            tensor_parallel_size=1,
            save_distributed_checkpoint=save_distributed_checkpoint,
            process_group_backend=process_group_backend,
            **kwargs,
        )

    def _setup_distributed(self) -> None:
        super()._setup_distributed()
        self._data_parallel_size = self.world_size  # every rank (of every node) is a data-parallel rank

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: Any, storage_options: Any | None = None) -> None:
        """Distributed checkpoints: written aside and renamed into place when complete (a full one: Lightning's)."""
        if not self._save_distributed_checkpoint or storage_options is not None:
            super().save_checkpoint(checkpoint, filepath, storage_options)
            return
        from lightning.fabric.strategies.fsdp import _distributed_checkpoint_save

        state = {"state_dict": checkpoint.pop("state_dict")}
        state.update({f"optimizer_{i}": s for i, s in enumerate(checkpoint.pop("optimizer_states", []))})
        sharded_checkpoint.save_sharded(
            Path(self.broadcast(str(filepath))),
            lambda folder: _distributed_checkpoint_save(state, folder),
            checkpoint,
            rank=self.global_rank,
            world_size=self.world_size,
            broadcast=self.broadcast,
        )

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        """Refuse (on every rank) a checkpoint folder whose save did not finish, naming the newest complete one."""
        path = Path(self.broadcast(str(checkpoint_path)))
        problem = self.broadcast(sharded_checkpoint.resume_problem(path) if self.global_rank == 0 else None)
        if problem is not None:
            raise sharded_checkpoint.IncompleteCheckpointError(problem)
        return super().load_checkpoint(path, weights_only)


if "fsdp2" not in StrategyRegistry:
    StrategyRegistry.register(
        "fsdp2", FSDP2Strategy, description="FSDP2 data parallelism over all ranks (searchr1 FSDP2Strategy)"
    )
