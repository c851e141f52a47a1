"""What a training command prints: short option errors, plain step lines when piped, where Ctrl-C left the run.

* :class:`ShortErrorParser`: the LightningCLI parser whose errors (unknown option, bad value) are a few lines
  starting ``searchr1: error:`` instead of jsonargparse's full usage dump (``SEARCHR1_DEBUG=1``: the original).
* :class:`StepLines`: with stdout not a terminal (SLURM, ``nohup``, ``> log``), a progress bar prints nothing for
  minutes and then its whole history at exit; this callback prints one plain line per step instead (the metrics
  the module shows in the bar, e.g. ``reward``, ``em``, ``searches``, and the step's seconds).
  :func:`adapt_trainer_config` swaps it in for the bar.
* :class:`InterruptReport`: Lightning turns Ctrl-C into a graceful stop and exit status 1; this callback says
  where the last checkpoint is, so the run can be resumed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser

from searchr1.errors import debug_enabled, fail

ORDER = ("reward", "em", "searches")
"""Metrics first in a step line (then the others the module shows in the progress bar, by name)."""


class ShortErrorParser(LightningArgumentParser):
    """A ``LightningArgumentParser`` whose parse errors are :func:`searchr1.errors.format_error` lines (exit 2)."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if debug_enabled() or not self.exit_on_error:
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        fail(f"{_short(message)} (`{prog} --help` lists the options)")  # one line: the option and where to look


def _short(message: str) -> str:
    """jsonargparse's message without the union/type listings that follow the first explanation."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    keep = []
    for line in lines:
        if line.startswith(("Given value type", "Subtypes:", "Errors:")):
            break
        keep.append(line)
    return " ".join(keep[:3]) or message


def format_step(step: int, max_steps: int | None, metrics: dict[str, float], seconds: float) -> str:
    """One step line, e.g. ``step 3/15  reward 0.412  em 0.375  searches 1.20  12.3 s``."""
    names = [n for n in ORDER if n in metrics] + sorted(n for n in metrics if n not in ORDER)
    of = f"/{max_steps}" if max_steps else ""
    parts = [f"step {step}{of}", *(f"{n} {metrics[n]:.3g}" for n in names), f"{seconds:.1f} s"]
    return "  ".join(parts)


class StepLines(Callback):
    """One plain line per training step on stdout (rank 0), and one per validation: for logs that are not a TTY."""

    def __init__(self) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, idx: int):
        if trainer.global_rank != 0:
            return
        metrics = _floats(trainer.progress_bar_metrics)
        step = trainer.fit_loop.epoch_loop.batch_progress.total.completed + 1  # batches (rollout steps), resumed too
        total = trainer.num_training_batches * (trainer.max_epochs or 0)  # (global_step counts optimizer steps)
        seconds = time.perf_counter() - self._t0
        print(format_step(step, int(total) if 0 < total < float("inf") else None, metrics, seconds), flush=True)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.global_rank != 0 or trainer.sanity_checking:
            return
        metrics = {k: v for k, v in _floats(trainer.callback_metrics).items() if k.startswith("val")}
        if metrics:
            shown = "  ".join(f"{k} {v:.3g}" for k, v in sorted(metrics.items()))
            done = trainer.fit_loop.epoch_loop.batch_progress.total.completed if trainer.state.fn == "fit" else 0
            print(f"validation{f' after step {done}' if done else ''}  {shown}", flush=True)


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for name, value in metrics.items():
        try:
            out[name] = float(value)
        except (TypeError, ValueError):
            continue
    return out


class InterruptReport(Callback):
    """On Ctrl-C (Lightning's graceful stop), print where the last checkpoint is and how to resume from it."""

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt) and trainer.global_rank == 0:
            print(interrupt_message(trainer), file=sys.stderr, flush=True)


def interrupt_message(trainer: Trainer) -> str:
    """Where the newest checkpoint of ``trainer``'s run is (its ``ModelCheckpoint`` folders), or that there is none."""
    found = []
    for cb in trainer.callbacks:
        if isinstance(cb, ModelCheckpoint):
            found += [Path(p) for p in (cb.last_model_path, cb.best_model_path) if p]
            if cb.dirpath and Path(cb.dirpath).is_dir():
                found += [p for p in Path(cb.dirpath).glob("*.ckpt") if not p.name.startswith(".")]
    found = [p for p in found if p.is_file()]
    if not found:
        return f"searchr1: interrupted (Ctrl-C) at step {trainer.global_step}; no checkpoint was written yet"
    newest = max(found, key=lambda p: p.stat().st_mtime)
    return (
        f"searchr1: interrupted (Ctrl-C) at step {trainer.global_step}; the last checkpoint is {newest}\n"
        f"  resume: add --ckpt_path {newest} to the same command"
    )


def adapt_trainer_config(trainer_config: Any, interactive: bool | None = None) -> None:
    """Before the ``Trainer`` is built (its config namespace, callbacks instantiated): add :class:`InterruptReport`;
    when stdout is not a terminal, replace the progress bar by :class:`StepLines`."""
    interactive = sys.stdout.isatty() if interactive is None else interactive
    callbacks = list(getattr(trainer_config, "callbacks", None) or [])
    callbacks.append(InterruptReport())
    if not interactive and getattr(trainer_config, "enable_progress_bar", True) is not False:
        callbacks = [cb for cb in callbacks if not isinstance(cb, ProgressBar)]
        callbacks.append(StepLines())
        trainer_config.enable_progress_bar = False
    trainer_config.callbacks = callbacks
