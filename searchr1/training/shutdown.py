"""How a run ends when it is stopped from outside: SIGTERM (SLURM, Kubernetes) or a rank that died or hangs.

``ShutdownGuard`` (added by ``SearchR1Module.configure_callbacks``, so every run has it):

* **SIGTERM** sets a flag (Lightning's own handler is replaced for the training loop: it ends the run after the
  step with exit status 0 and no checkpoint, and each rank decides alone). At the end of every rollout step the
  ranks agree on the flag (one all-reduce), so a signal that reached any one rank stops all of them after the same
  step; every rank takes part in saving ``last.ckpt`` (a collective under FSDP2), rank 0 prints one line saying
  the run was cut short and where the checkpoint is, and the process exits with 143 (128 + SIGTERM).
* **A lost rank**: when a collective fails (gloo "Connection closed by peer" after a rank died, a timeout after
  one hung), the surviving ranks check in through the rendezvous store for a few seconds; the ranks that do not
  are named in one line on stderr (by the lowest surviving rank), the traceback goes to
  ``<default_root_dir>/error-rank<r>.txt`` instead of the terminal, and the exit status is 1. Under Lightning's
  launcher, rank 0 names a child rank whose process has exited without waiting.
"""

from __future__ import annotations

import re
import signal
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import torch.distributed as dist
from lightning.pytorch import Callback, LightningModule, Trainer

from searchr1.training.sharding import rank_lockstep

SIGTERM_EXIT_STATUS = 128 + signal.SIGTERM
CHECK_IN_SECONDS = 3.0
_COLLECTIVE_FAILURE = re.compile(
    r"Connection closed by peer|Connection reset by peer|Broken pipe|Timed out waiting \d+ms|"
    r"collective operation timeout|ProcessGroupGloo|ProcessGroupNCCL|NCCL (error|communicator)"
)


class RunCutShort(SystemExit):
    """The run stopped after a SIGTERM, its checkpoint saved; exits with status 143."""


class ShutdownGuard(Callback):
    """SIGTERM → checkpoint, one line, exit 143; a dead or hung rank → one line naming it (see the module doc)."""

    def __init__(self) -> None:
        self.requested = False

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True  # acted on at the end of the rollout step, when the state is whole

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.requested = self.requested or trainer.received_sigterm  # a signal during setup or sanity checks
        # Lightning restores the handler it found when fit ends (its signal connector's teardown)
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, idx: int):
        lockstep = rank_lockstep(trainer, pl_module.device)
        stop = lockstep.any(self.requested) if lockstep is not None else self.requested
        if not stop:
            return
        path = checkpoint_path(trainer)
        trainer.save_checkpoint(path)  # every rank: a collective under FSDP2
        if trainer.is_global_zero:
            steps = getattr(pl_module, "_rollout_steps", trainer.global_step)
            print(
                f"searchr1: run cut short by SIGTERM after rollout step {steps}; checkpoint: {path} "
                f"(resume: the same command with --ckpt_path {path})",
                file=sys.stderr,
                flush=True,
            )
        raise RunCutShort(SIGTERM_EXIT_STATUS)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SystemExit) or trainer.world_size < 2 or not is_collective_failure(exception):
            return
        rank, world = trainer.global_rank, trainer.world_size
        missing = exited_child_ranks(trainer) or unresponsive_ranks(rank, world)
        if missing == []:  # every rank is there: not a lost rank, the traceback stays on the terminal
            return
        report = Path(trainer.default_root_dir) / f"error-rank{rank}.txt"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text("".join(traceback.format_exception(exception)))
        lost = [0] if missing is None else missing
        alive = [r for r in range(world) if r not in lost]
        if not alive or rank == min(alive):  # one line for the whole run
            print(lost_rank_line(rank, world, missing, exception, report), file=sys.stderr, flush=True)
        hide_traceback(exception)


def lost_rank_line(rank: int, world: int, missing: list[int] | None, exception: BaseException, report: Path) -> str:
    """The one line for a failed collective: who did not answer (None: the store on rank 0 did not), and why."""
    if missing is None:
        who = f"rank 0 of {world} (it hosts the rendezvous store) is dead or hung"
    else:
        who = f"rank{'s' * (len(missing) > 1)} {', '.join(map(str, missing))} of {world} did not answer: dead or hung"
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(exception).strip())  # gloo's "[…/pair.cc:553] " source prefix
    cause = text.splitlines()[0].split(". ")[0][:200] if text else type(exception).__name__
    return f"searchr1: {who}; rank {rank}'s collective failed ({cause}); every rank stops. Traceback: {report}"


def checkpoint_path(trainer: Trainer) -> Path:
    """Where a cut-short run saves: ``last.ckpt`` in the ModelCheckpoint folder, else ``<root>/checkpoints``."""
    callback = trainer.checkpoint_callback
    folder = getattr(callback, "dirpath", None) or Path(trainer.default_root_dir) / "checkpoints"
    name = getattr(callback, "CHECKPOINT_NAME_LAST", "last") + getattr(callback, "FILE_EXTENSION", ".ckpt")
    return Path(folder) / name


def is_collective_failure(exception: BaseException) -> bool:
    """Whether ``exception`` (or what caused it) is a failed collective: a peer gone, a timeout, a backend error."""
    seen: BaseException | None = exception
    for _ in range(8):  # the chain of causes, bounded
        if seen is None:
            return False
        if isinstance(seen, dist.DistError) or _COLLECTIVE_FAILURE.search(str(seen)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def exited_child_ranks(trainer: Trainer) -> list[int]:
    """Ranks started by Lightning's launcher on this node (children of its rank 0) whose process has exited.

    Known at once, without the check-in wait (Lightning's own observer SIGKILLs the whole run within 5 s of a child's
    death, with its own line).
    """
    procs = getattr(trainer.strategy.launcher, "procs", None) or []
    first = trainer.node_rank * trainer.num_devices
    return [first + i + 1 for i, proc in enumerate(procs) if proc.poll() is not None]


def unresponsive_ranks(rank: int, world_size: int, wait_s: float = CHECK_IN_SECONDS) -> list[int] | None:
    """Check in through the rendezvous store and wait up to ``wait_s`` for the others; the ranks that did not.

    None when the store itself does not answer (it lives in rank 0's process).
    """
    try:
        store = dist.distributed_c10d._get_default_store()
        store.set_timeout(timedelta(seconds=wait_s))
        store.set(f"searchr1/alive/{rank}", "1")
        deadline = time.monotonic() + wait_s
        while True:
            missing = [r for r in range(world_size) if not store.check([f"searchr1/alive/{r}"])]
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(0.1)
    except Exception:  # the store is gone (rank 0 dead) or does not answer (rank 0 hung)
        return None


def hide_traceback(exception: BaseException) -> None:
    """Print nothing more for ``exception`` if it ends the process (its one line and the file said it all)."""
    previous = sys.excepthook

    def hook(kind, value, tb) -> None:
        if value is not exception:
            previous(kind, value, tb)

    sys.excepthook = hook
