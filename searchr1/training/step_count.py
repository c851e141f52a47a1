"""One ``trainer.global_step`` per rollout step, under manual optimization, and resumes that continue an epoch.

Why: Lightning counts ``global_step`` under manual optimization as the number of ``LightningOptimizer.step()``
calls (``fit_loop.epoch_loop.manual_optimization.optim_step_progress.total.completed``, incremented by the hooks
the manual loop puts around every ``optimizer.step()``). One rollout step of ours makes ``ppo_epochs x
mini-batches`` policy steps and as many critic steps, so ``max_steps``, ``ModelCheckpoint(every_n_train_steps)``,
the ``step=N`` in checkpoint names and ``estimated_stepping_batches`` (the LR warm-up length when ``max_steps`` is
set) all counted optimizer updates, while everything else here (schedulers, seeds, ``ExportPretrained``,
``SampleLogger``, Search-R1's ``save_freq``) counts rollout steps.

How (:func:`one_global_step`): the training module wraps each ``training_step`` in it. It notes the manual loop's
step counter before the step and sets it to that value + 1 after, whatever number of ``optimizer.step()`` calls
(policy, critic, zero when a step is skipped) happened in between. The optimizers still step through Lightning's
``LightningOptimizer.step`` -> ``strategy.optimizer_step`` -> precision plugin, so AMP grad scaling, DeepSpeed's
engine step, FSDP2 and DDP are untouched; only the counter is corrected. The counter is per process and every rank
runs the same ``training_step``s, so all ranks agree. It is saved in checkpoints as is, so ``max_steps``, the
checkpoint names, ``every_n_train_steps`` and a resume all read rollout steps. Stepping the raw optimizers instead
(for all but one call) would bypass the precision and DeepSpeed paths; turning the counting hooks off would also
turn off Lightning's optimizer-step profiling.

Two checkpoint fixes go with it (the module's ``on_save_checkpoint`` / ``on_load_checkpoint``):

- :func:`reopen_unfinished_epoch`: Lightning records an epoch as complete when ``max_steps`` (or a stop request)
  ends it early, so a resume with a larger ``max_steps`` found ``max_epochs`` reached and trained nothing. A
  checkpoint written after such an early end records the epoch as still running (the batches done so far stay
  done; the data module's own position says which batch comes next), so the resume continues that epoch.
- :func:`global_step_from_rollout_steps`: a checkpoint written before this change counted optimizer updates; at
  load its step counter is set to the rollout steps it records, so it resumes on the new scale.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lightning.pytorch.trainer.states import TrainerFn

MANUAL_STEPS_KEY = "epoch_loop.manual_optimization.optim_step_progress"


def _manual_step_progress(trainer: Any):
    return trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress


@contextmanager
def one_global_step(trainer: Any | None) -> Iterator[None]:
    """Count the enclosed work (one rollout step, any number of ``optimizer.step()`` calls) as one global step.

    A no-op without a trainer or outside fitting (plain use of the module, tests). On an exception the counter is
    left as Lightning set it (the step did not finish; the run is ending or rolls back).
    """
    if trainer is None or not getattr(trainer, "training", False):
        yield
        return
    progress = _manual_step_progress(trainer)
    total, current = progress.total.completed, progress.current.completed
    yield
    progress.total.ready = progress.total.completed = total + 1
    progress.current.ready = progress.current.completed = current + 1


def reopen_unfinished_epoch(trainer: Any | None, checkpoint: dict[str, Any]) -> None:
    """If the training epoch was ended before its last batch (``max_steps``, a stop), record it as still running.

    Lightning marks the epoch processed and completed when ``max_steps`` stops it mid-way; saved that way, a resume
    with a larger ``max_steps`` sees ``max_epochs`` reached. Rolled back to "started, not processed", the resume
    continues the epoch from the batches already done (``batch_progress`` is kept). Checkpoints written inside an
    epoch, or after all its batches ran, are left alone.
    """
    if trainer is None or trainer.state.fn != TrainerFn.FITTING or "loops" not in checkpoint:
        return
    epoch_loop = trainer.fit_loop.epoch_loop
    max_steps = trainer.fit_loop.max_steps
    ended_early = trainer.should_stop or (max_steps is not None and 0 <= max_steps <= epoch_loop.global_step)
    if not ended_early or epoch_loop.batch_progress.current.completed >= trainer.num_training_batches:
        return  # the epoch ran to its last batch: nothing to reopen
    epoch = checkpoint["loops"]["fit_loop"]["epoch_progress"]
    closed = [t for t in (epoch["total"], epoch["current"]) if t["started"] > 0 and t["processed"] >= t["started"]]
    for tracker in closed:  # closed by the early end: back to "started, not processed"
        tracker["processed"] = tracker["completed"] = tracker["started"] - 1
        tracker["ready"] = tracker["started"]
    if closed:
        checkpoint["epoch"] = epoch["current"]["started"] - 1


def global_step_from_rollout_steps(checkpoint: dict[str, Any], rollout_steps: int | None) -> None:
    """Set a loaded checkpoint's step counter to its rollout steps (older checkpoints counted optimizer updates)."""
    loops = checkpoint.get("loops", {}).get("fit_loop", {})
    progress = loops.get(MANUAL_STEPS_KEY)
    if rollout_steps is None or progress is None:
        return
    if progress["total"]["completed"] != rollout_steps:
        shift = rollout_steps - progress["total"]["completed"]
        progress["total"]["ready"] = progress["total"]["completed"] = rollout_steps
        current = progress["current"]
        current["ready"] = current["completed"] = max(0, current["completed"] + shift)
    checkpoint["global_step"] = rollout_steps
