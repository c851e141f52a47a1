"""What a run spends on a paid search engine: logged each step, written to a cost log, and a clean stop at ``max_cost``.

``searchr1 fit`` adds :class:`SearchCost` to every run (``--search_cost.*``); it does nothing unless the module's
retriever (or the retriever a ``RerankRetriever`` wraps) is an online one
(:class:`~searchr1.retrieval.online.OnlineRetriever`). Then, after every training step, it logs ``search/requests``,
``search/cost``, ``search/rate_limited``, ``search/disk_hits`` and ``search/scope_cost`` and appends the same numbers
to ``<default_root_dir>/search_cost.jsonl`` (rank 0, with the step's failed searches); ``RunSummary`` puts the
final spend into ``summary.json``.

The stop. The retriever refuses the request that would take the budget scope past ``max_cost`` by raising
:class:`~searchr1.retrieval.search_cache.BudgetExhausted` mid-rollout, which ends the training step before its
update (no update is made from a batch whose searches were cut off). :meth:`SearchCost.on_exception` then saves
``<checkpoint dir>/budget-exhausted.ckpt`` (the state after the last complete step) and ``searchr1 fit`` exits with
status 1 and one message naming the checkpoint. Resuming from it with a larger ``max_cost`` redoes the cut step,
and every query already paid for comes from the disk cache. Chosen over ``trainer.should_stop``: that would finish
the step with "search failed" observations and update on them, and exit 0 as if the run had completed.

Under several ranks one rank may run out while the others are mid-step; a checkpoint is a collective there, so a
rank that raised alone would wait for the others forever: no checkpoint is written (the message says to resume
from the last periodic one) and Lightning ends the other ranks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from searchr1.retrieval.online import SearchSpend, search_spend
from searchr1.retrieval.search_cache import BudgetExhausted

COST_LOG = "search_cost.jsonl"
LOGGED = ("requests", "cost", "attempts", "rate_limited", "disk_hits", "scope_requests", "scope_cost")


def module_spend(pl_module: LightningModule) -> SearchSpend | None:
    """The spend of the module's retriever, None when it is not a paid one."""
    return search_spend(getattr(pl_module, "retriever", None))


class SearchCost(Callback):
    """Per-step spend metrics and cost log, and the checkpoint before a ``max_cost`` stop (see the module doc).

    Args:
        checkpoint_name: file name (without ``.ckpt``) of the checkpoint saved when the budget runs out.
        log_file: JSONL cost log name in the trainer's root folder ("" turns it off).
    """

    def __init__(self, checkpoint_name: str = "budget-exhausted", log_file: str = COST_LOG) -> None:
        self.checkpoint_name = checkpoint_name
        self.log_file = log_file

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, idx: int):
        spend = module_spend(pl_module)
        if spend is None:
            return
        values = {f"search/{k}": float(getattr(spend, k)) for k in LOGGED}
        pl_module.log_dict(values, on_step=True, on_epoch=False, rank_zero_only=True)
        if self.log_file and trainer.global_rank == 0:
            failures = trainer.callback_metrics.get("rollout/search_failures")  # next to the spend: 429s must not fail
            row = {"step": trainer.global_step, "batch": idx, **spend.as_dict()}
            row["search_failures"] = None if failures is None else float(failures)
            path = Path(trainer.default_root_dir) / self.log_file
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, BudgetExhausted):
            return
        if trainer.world_size > 1:
            rank_zero_info("searchr1: search budget exhausted on one rank: no checkpoint (it needs every rank)")
            return
        callback = trainer.checkpoint_callback
        folder = Path(getattr(callback, "dirpath", None) or Path(trainer.default_root_dir) / "checkpoints")
        path = folder / f"{self.checkpoint_name}.ckpt"
        trainer.save_checkpoint(path)
        exception.checkpoint = str(path)
        spend = module_spend(pl_module)
        if spend is not None:
            rank_zero_info(
                f"searchr1: search budget exhausted after {spend.requests} paid requests ({spend.cost:.4f}) in this "
                f"process, {spend.scope_cost:.4f} of max_cost {spend.max_cost} in scope {spend.scope!r}; "
                f"checkpoint: {path}"
            )


def stop_message(err: BudgetExhausted) -> str:
    """The one-line message ``searchr1 fit`` exits with."""
    where = (
        f"checkpoint of the last complete step: {err.checkpoint}; resume with --ckpt_path {err.checkpoint} "
        "after raising max_cost (queries already paid for are cached)"
        if err.checkpoint
        else "no checkpoint was written for this step (several ranks): resume from the last periodic checkpoint"
    )
    return f"searchr1: stopped: {err}. {where}"
