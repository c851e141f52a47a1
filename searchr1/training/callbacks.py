"""Thin Lightning callbacks around the rollout: sample logging and (re-exported from
``searchr1.training.collapse``) the ``CollapseGuard``. ``WeightSync`` is an empty name kept for old configs:
the module keeps the generation engine's weights current itself (``searchr1.training.engine_weights``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback

from searchr1.training.collapse import CollapseGuard, TrainingCollapse
from searchr1.training.steps import StepOutput

__all__ = ["CollapseGuard", "SampleLogger", "TrainingCollapse", "WeightSync"]


class WeightSync(Callback):
    """Kept so that configs listing it still load; it does nothing.

    The training module itself keeps an engine with its own weights (vLLM) current, whatever the callbacks list
    says: see :mod:`searchr1.training.engine_weights` (push before the first rollout of fit/validate/test and
    after every update, sleep between rollout and update).
    """


class SampleLogger(Callback):
    """Every ``every_n_steps`` training steps, write ``num_samples`` full trajectories to JSONL and TensorBoard.

    Args:
        every_n_steps: logging period in rollout steps.
        num_samples: trajectories written each time.
        filename: JSONL file name inside the logger's (or the trainer's root) folder.
    """

    def __init__(self, every_n_steps: int = 10, num_samples: int = 2, filename: str = "samples.jsonl") -> None:
        self.every_n_steps, self.num_samples, self.filename = every_n_steps, num_samples, filename

    def on_train_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not isinstance(outputs, StepOutput):
            return
        step = pl_module._rollout_steps - 1
        if step % self.every_n_steps:
            return
        # on every rank: ``trainer.log_dir`` is a broadcast under DDP/FSDP2 (a collective), so reading it on rank 0
        # only would hang against the other ranks' next collective
        folder = Path(trainer.log_dir or trainer.default_root_dir)
        if trainer.global_rank != 0:
            return
        rollout, scores = outputs.rollout, outputs.scores
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for i, traj in enumerate(rollout.trajectories[: self.num_samples]):
            example = batch[traj.prompt_index]
            rows.append(
                {
                    "step": step,
                    "question": example.question,
                    "golden_answers": example.golden_answers,
                    "response": traj.response_text,
                    "queries": traj.queries,
                    "finish_reason": traj.finish_reason,
                    "score": float(scores[i]),
                }
            )
        with open(folder / self.filename, "a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        experiment = getattr(trainer.logger, "experiment", None)
        if experiment is not None and hasattr(experiment, "add_text"):
            text = "\n\n---\n\n".join(
                f"**score {r['score']}** Q: {r['question']}\n\n```\n{r['response']}\n```" for r in rows
            )
            experiment.add_text("samples", text, global_step=step)
