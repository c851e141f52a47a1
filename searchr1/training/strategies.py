"""``FSDP2Strategy``: Lightning's ``ModelParallelStrategy`` set up for pure data-parallel FSDP2, named ``fsdp2``.

``ModelParallelStrategy`` (FSDP2 + tensor parallel) is the Lightning strategy that runs ``fully_shard`` models,
on GPUs (NCCL) and on CPU ranks (gloo), so the sharded path is tested for real without GPUs. Its default mesh is
"data parallel across nodes, tensor parallel within a node"; this subclass makes every rank a data-parallel rank
(``data_parallel_size`` = world size, ``tensor_parallel_size`` = 1), which is what ``SearchR1Module`` shards for.
``SearchR1Module.configure_model`` applies ``fully_shard`` (see :mod:`searchr1.training.sharding`).

Use ``--trainer.strategy=fsdp2`` (registered name) or ``class_path: searchr1.training.strategies.FSDP2Strategy``.
"""

from __future__ import annotations

from datetime import timedelta

from lightning.pytorch.strategies import ModelParallelStrategy, StrategyRegistry


class FSDP2Strategy(ModelParallelStrategy):
    """Data-parallel FSDP2 over all ranks (all nodes) through ``ModelParallelStrategy``.

    Args:
        save_distributed_checkpoint: each rank writes its own shard (a checkpoint folder); False gathers the
            full state on rank 0 into one file (needs the whole model in one process's memory).
        process_group_backend: ``nccl``/``gloo``; default by device.
        timeout_seconds: process-group timeout; a rank waiting longer in a collective fails instead of hanging
            (tests set a few seconds; default: torch's 30 minutes).
    """

    def __init__(
        self,
        save_distributed_checkpoint: bool = True,
        process_group_backend: str | None = None,
        timeout_seconds: float | None = None,
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


if "fsdp2" not in StrategyRegistry:
    StrategyRegistry.register(
        "fsdp2", FSDP2Strategy, description="FSDP2 data parallelism over all ranks (searchr1 FSDP2Strategy)"
    )
