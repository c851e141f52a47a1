"""Asynchronous rollout hooks of :class:`~searchr1.training.module.SearchR1Module` (a mixin, docs/async.md).

With ``async_rollout`` the training batch comes from rollout servers started on first use
(:func:`~searchr1.training.async_rollout.start_async_rollout`); the run summary reports them, and ``teardown``
stops them.
"""

from __future__ import annotations

from typing import Any

from searchr1.rollout import RolloutBatch
from searchr1.training.async_rollout import start_async_rollout


class AsyncRolloutMixin:
    """Takes training batches from the rollout servers (``self._async``, None until the first async step)."""

    def _take_async(self, batch: list) -> RolloutBatch:
        if self._async is None:
            self._async = start_async_rollout(self)
        rollout = self._async.take(self._rollout_steps, batch)
        self.log_dict(self._async.step_metrics(rollout, self._rollout_steps), batch_size=len(rollout))
        return rollout.to(self.device)

    def async_summary(self) -> dict[str, Any] | None:
        """The ``async`` object of the run summary (None when training synchronously)."""
        return self._async.summary() if self._async is not None else None

    def teardown(self, stage: str) -> None:
        if self._async is not None:  # stop the rollout servers this run started
            self._async.close()
