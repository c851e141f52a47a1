"""Checkpoint hooks of :class:`~searchr1.training.module.SearchR1Module` (a mixin).

What a checkpoint holds besides the weights: the rollout-step count (the global step of the manual loop), the run
settings that travel with the weights (:mod:`searchr1.rollout.run_settings`), and with asynchronous training the
driver's snapshot of the groups sampled ahead. LoRA checkpoints hold only the adapters; the frozen reference is never
saved (it is rebuilt from the starting weights at load).
"""

from __future__ import annotations

from typing import Any

from searchr1.models.lora import drop_frozen_weights
from searchr1.rollout.run_settings import RunSettings, run_settings
from searchr1.training.sharding import is_fsdp2
from searchr1.training.step_count import global_step_from_rollout_steps, reopen_unfinished_epoch


class CheckpointMixin:
    """``on_save_checkpoint``/``on_load_checkpoint``, the run settings, and the callbacks every run gets."""

    def configure_callbacks(self) -> list:
        """Every run: SIGTERM saves and exits non-zero, a lost rank is named (:mod:`searchr1.training.shutdown`)."""
        from searchr1.training.shutdown import ShutdownGuard

        return [ShutdownGuard()]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the reference is not a submodule (frozen at its starting weights, rebuilt at load): never in state_dict
        checkpoint["searchr1"] = {"rollout_steps": self._rollout_steps, "run": self.run_settings().to_dict()}
        if self._async is not None:  # groups sampled ahead (finished or in flight) continue after a resume
            checkpoint["searchr1"]["async"] = self._async.driver.snapshot()
        reopen_unfinished_epoch(self._trainer, checkpoint)  # a max_steps stop resumes inside its epoch
        # LoRA: only what trains; except FSDP2 distributed checkpoints, whose loader reads every key of the module
        if not (is_fsdp2(self.policy) and getattr(self.trainer.strategy, "_save_distributed_checkpoint", False)):
            drop_frozen_weights(checkpoint.get("state_dict"), {"policy.": self.policy, "critic.": self.critic})

    def run_settings(self) -> RunSettings:
        """Rollout and retriever settings that travel with the weights (checkpoints, HF exports) for eval/infer."""
        return run_settings(self.rollout_config, self.retriever, self.hparams.use_chat_template)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._rollout_steps = checkpoint.get("searchr1", {}).get("rollout_steps", 0)
        self._async_restore = checkpoint.get("searchr1", {}).get("async")
        global_step_from_rollout_steps(checkpoint, checkpoint.get("searchr1", {}).get("rollout_steps"))
        if self._engine_weights is not None:  # an engine built before the load holds other weights
            self._engine_weights.mark_stale()
        state = checkpoint.get("state_dict")
        if isinstance(state, dict):  # single-file checkpoints of earlier versions: drop a stored reference copy
            for key in [k for k in state if k.startswith("reference.")]:
                del state[key]
