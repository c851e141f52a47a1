"""``CollapseGuard``: a callback that watches each training step for collapse and warns, stops or rolls back.

After every training step it reads the step's logged metrics, turns them into signals (``collapse_rules``), and
acts on the worst alarm: ``warn`` logs it; ``stop`` raises :class:`TrainingCollapse`; ``rollback`` reloads the
last checkpoint saved before the anomaly began (weights, optimizer and scheduler states), multiplies the policy
learning rate by ``lr_factor`` and lets training continue with the next batch (the data position, the step
counters and the rollout seeds move on; they are not rewound). After ``max_rollbacks`` rollbacks a further
rollback alarm stops the run. Every alarm goes to TensorBoard (``alarms/<signal>`` scalars and an ``alarms``
text) and to ``<run>/alarms.jsonl``, and is printed on the terminal by rank 0 (an alarm only in a file is silent).

Multi-rank: the metrics are logged with ``sync_dist=True`` (already rank means); the guard all-reduces its
signal vector again and then the chosen action (max over ranks) before acting, so every rank takes the same
decision at the same step and raises or reloads together; the checkpoint is chosen on rank 0 and broadcast.

A checkpoint qualifies for a rollback when it was saved before the first anomalous step (its weights produced
healthy signals). With ``ModelCheckpoint(save_top_k=1)`` only the newest step file (and ``last.ckpt``) exist; when
both are newer than the anomaly the guard stops instead, naming the situation.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch import Callback, LightningModule, Trainer

from searchr1.training.collapse_rules import (
    ACTIONS,
    Alarm,
    Detector,
    SignalRule,
    alarm_line,
    alarm_record,
    default_rules,
)
from searchr1.training.collapse_rules import signal_values as _signal_values

SEVERITY = {name: i for i, name in enumerate(ACTIONS)}  # warn < rollback < stop


class TrainingCollapse(RuntimeError):
    """Training stopped by ``CollapseGuard``.

    Attributes:
        signal: the rule that fired (e.g. ``entropy_collapse``).
        value: the signal's value at the step.
        baseline: ``(mean, std)`` of its running baseline, or None before the warm-up.
        checkpoint: the last checkpoint saved before the anomaly began, or None.
    """

    def __init__(self, alarm: Alarm, checkpoint: str | None, why: str) -> None:
        self.signal, self.value, self.checkpoint = alarm.signal, alarm.value, checkpoint
        self.baseline = None if alarm.baseline_mean is None else (alarm.baseline_mean, alarm.baseline_std)
        base = "none yet" if self.baseline is None else f"{self.baseline[0]:.4g} ± {self.baseline[1]:.3g}"
        super().__init__(
            f"training collapse: {alarm.signal} ({alarm.metric}) = {alarm.value:.4g} at step {alarm.step}, "
            f"{alarm.reason}; baseline {base}; anomaly began at step {alarm.anomaly_start}; {why}. Last good "
            f"checkpoint: {checkpoint or 'none'}. Resume from it with a lower learning rate (or inspect the "
            "samples and alarms.jsonl of these steps)."
        )


class CollapseGuard(Callback):
    """Detects training collapse from per-step signals and warns, stops or rolls back (see module docstring).

    Args:
        rules: extra or replacement rules by signal name, merged over ``collapse_rules.default_rules()``.
        actions: per-signal action override: ``warn``, ``rollback``, ``stop`` or ``off`` (drop the rule).
        lr_factor: factor applied to the policy learning rate at each rollback (0 < f <= 1).
        max_rollbacks: rollbacks allowed in the run; the next rollback alarm stops it.
        alarms_file: JSONL file name inside the run folder (the logger's ``log_dir``, else ``default_root_dir``).
    """

    def __init__(
        self,
        rules: dict[str, SignalRule] | None = None,
        actions: dict[str, str] | None = None,
        lr_factor: float = 0.5,
        max_rollbacks: int = 2,
        alarms_file: str = "alarms.jsonl",
    ) -> None:
        if not 0 < lr_factor <= 1:
            raise ValueError(f"CollapseGuard.lr_factor must be in (0, 1], got {lr_factor}")
        if max_rollbacks < 0:
            raise ValueError(f"CollapseGuard.max_rollbacks must be >= 0, got {max_rollbacks}")
        merged = {**default_rules(), **(rules or {})}
        for name, action in (actions or {}).items():
            if name not in merged:
                raise ValueError(f"CollapseGuard.actions: unknown signal {name!r}; valid: {', '.join(sorted(merged))}")
            if action == "off":
                del merged[name]
            else:
                merged[name] = SignalRule(**{**merged[name].__dict__, "action": action})
        self.rules = merged
        self.detector = Detector(merged)
        self.lr_factor, self.max_rollbacks, self.alarms_file = lr_factor, max_rollbacks, alarms_file
        self.rollbacks = 0
        self.lr_scale = 1.0
        self.events: list[dict[str, Any]] = []
        self._run_dir: Path | None = None

    # ------------------------------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._run_dir = Path(trainer.log_dir or trainer.default_root_dir)  # a broadcast: called on every rank

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if _is_scalar(v)}
        values = agree_on_values(_signal_values(self.rules, metrics), pl_module.device)
        step = _steps_done(pl_module, trainer) - 1
        alarms = self.detector.observe(values, step)
        if not alarms:
            return
        worst = max(alarms, key=lambda a: SEVERITY[a.action])
        action = ACTIONS[agree_on_max(SEVERITY[worst.action], pl_module.device)]
        if action == "warn":
            self._record(trainer, alarms, "warn")
            return
        path = trainer.strategy.broadcast(self._last_good_checkpoint(trainer, worst.anomaly_start), src=0)
        if action == "rollback" and self.rollbacks < self.max_rollbacks and path is not None:
            self._rollback(trainer, pl_module, path)
            self._record(trainer, alarms, "rollback", checkpoint=path, lr_scale=self.lr_scale)
            return
        why = "its action is stop" if action == "stop" else self._why_no_rollback(path)
        self._record(trainer, alarms, "stop", checkpoint=path, why=why)
        raise TrainingCollapse(worst, path, why)

    def state_dict(self) -> dict[str, Any]:
        return {"rollbacks": self.rollbacks, "lr_scale": self.lr_scale, "detector": self.detector.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rollbacks = state_dict.get("rollbacks", 0)
        self.lr_scale = state_dict.get("lr_scale", 1.0)
        self.detector.load_state_dict(state_dict.get("detector", {}))

    # ------------------------------------------------------------------------------------- rollback
    def _why_no_rollback(self, path: str | None) -> str:
        if path is None:
            return "no checkpoint saved before the anomaly began is on disk, so it cannot roll back"
        return f"it already rolled back {self.rollbacks} time(s) (max_rollbacks={self.max_rollbacks})"

    def _last_good_checkpoint(self, trainer: Trainer, anomaly_start: int) -> str | None:
        """Newest checkpoint file whose step count is below the anomaly's first step (rank 0 reads the files)."""
        if trainer.global_rank != 0:
            return None
        best: tuple[int, float, str] | None = None
        folders = {cb.dirpath for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)}
        for folder in folders:
            for path in Path(folder).glob("*.ckpt"):
                if path.name.startswith("."):  # AtomicCheckpointIO temp files
                    continue
                try:  # a distributed (FSDP2) checkpoint is a folder whose meta.pt holds the non-tensor state
                    file = path / "meta.pt" if path.is_dir() else path
                    saved = torch.load(file, map_location="cpu", mmap=not path.is_dir(), weights_only=True)
                except Exception:  # a foreign or unreadable file is no rollback target
                    continue
                done = saved.get("searchr1", {}).get("rollout_steps", saved.get("global_step"))
                # a checkpoint holding the weights after `done` steps was first used at step index `done`
                if done is not None and done <= anomaly_start - 1:
                    key = (int(done), path.stat().st_mtime, str(path))
                    best = key if best is None or key > best else best
        return None if best is None else best[2]

    def _rollback(self, trainer: Trainer, pl_module: LightningModule, path: str) -> None:
        """Reload weights, optimizer and scheduler states from ``path``; keep the counters; lower the policy lr."""
        checkpoint = trainer.strategy.load_checkpoint(path)
        steps = getattr(pl_module, "_rollout_steps", None)
        pl_module.on_load_checkpoint(checkpoint)
        trainer.strategy.load_model_state_dict(checkpoint, strict=pl_module.strict_loading)
        trainer.strategy.load_optimizer_state_dict(checkpoint)
        for config, state in zip(trainer.lr_scheduler_configs, checkpoint.get("lr_schedulers", [])):
            config.scheduler.load_state_dict(state)
        if steps is not None:  # time moves on: rollout seeds and step numbers are not reused
            pl_module._rollout_steps = steps
        saved_scale = checkpoint.get("callbacks", {}).get(self.state_key, {}).get("lr_scale", 1.0)
        self.lr_scale *= self.lr_factor
        scale_policy_lr(trainer, self.lr_scale / saved_scale)
        self.rollbacks += 1
        self.detector.reset_streaks()

    # -------------------------------------------------------------------------------------- logging
    def _record(self, trainer: Trainer, alarms: list[Alarm], decision: str, **extra: Any) -> None:
        rows = [alarm_record(a, decision=decision, global_step=trainer.global_step, **extra) for a in alarms]
        self.events.extend(rows)
        if trainer.global_rank != 0:
            return
        for alarm in alarms:  # on the terminal too: an alarm only in a file is a silent one
            print(alarm_line(alarm, decision), file=sys.stderr, flush=True)
        folder = self._run_dir or Path(trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / self.alarms_file, "a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, default=_json_safe) + "\n")
        for logger in trainer.loggers:
            logger.log_metrics({f"alarms/{a.signal}": _finite_or(a.value) for a in alarms}, step=trainer.global_step)
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_text"):
                text = "\n\n".join(f"**{r['signal']}** → {decision}: {json.dumps(r, default=_json_safe)}" for r in rows)
                experiment.add_text("alarms", text, global_step=trainer.global_step)


def agree_on_values(values: dict[str, float | None], device: torch.device) -> dict[str, float | None]:
    """Rank mean of every signal (None where any rank lacks it); identity on one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    names = list(values)  # the rules dict: same order on every rank
    sums = torch.tensor(
        [values[n] if values[n] is not None else 0.0 for n in names], dtype=torch.float64, device=device
    )
    present = torch.tensor([float(values[n] is not None) for n in names], dtype=torch.float64, device=device)
    dist.all_reduce(sums, op=dist.ReduceOp.SUM)
    dist.all_reduce(present, op=dist.ReduceOp.MIN)
    world = dist.get_world_size()
    return {n: (sums[i].item() / world if present[i] > 0 else None) for i, n in enumerate(names)}


def agree_on_max(code: int, device: torch.device) -> int:
    """The largest ``code`` over ranks (the most severe action anyone decided); identity on one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return code
    tensor = torch.tensor([code], dtype=torch.long, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def scale_policy_lr(trainer: Trainer, factor: float) -> None:
    """Multiply the first (policy) optimizer's learning rates, and its scheduler's base rates, by ``factor``."""
    if not trainer.optimizers:
        return
    for group in trainer.optimizers[0].param_groups:
        group["lr"] *= factor
        if "initial_lr" in group:
            group["initial_lr"] *= factor
    if trainer.lr_scheduler_configs:
        scheduler = trainer.lr_scheduler_configs[0].scheduler
        scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]
        if hasattr(scheduler, "_last_lr"):
            scheduler._last_lr = [lr * factor for lr in scheduler._last_lr]


def _steps_done(pl_module: LightningModule, trainer: Trainer) -> int:
    steps = getattr(pl_module, "_rollout_steps", None)
    return int(steps) if steps is not None else int(trainer.global_step)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float)) or (isinstance(value, torch.Tensor) and value.numel() == 1)


def _finite_or(value: float, default: float = -1.0) -> float:
    return value if math.isfinite(value) else default


def _json_safe(value: Any) -> Any:
    return str(value)
