"""Validation and test of :class:`~searchr1.training.module.SearchR1Module` (a mixin).

Each evaluation batch is rolled out with the evaluation sampling settings (greedy by default) and tallied per data
source; at the epoch end the tally is all-reduced and logged as ``<val|test>/<source>/<metric>`` and
``<val|test>/em`` (the mean over sources).
"""

from __future__ import annotations

import torch

from searchr1.rollout import RolloutBatch
from searchr1.training.metrics import EvalTally


class EvaluationMixin:
    """``validation_step``/``test_step`` and their epoch-end logging (the tally ``self._eval_tally``)."""

    def validation_step(self, batch: list, batch_idx: int, dataloader_idx: int = 0) -> RolloutBatch:
        return self._eval_step(batch)  # the rollout: RunRecorder logs its searches

    def test_step(self, batch: list, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch)

    def _eval_step(self, batch: list) -> RolloutBatch:
        rollout = self.rollout(batch, train=False)
        self._eval_tally.add_rollout(rollout, batch, self.device)
        return rollout

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    def _log_eval(self, prefix: str) -> None:
        tally, self._eval_tally = self._eval_tally, EvalTally(protocol=self.rollout_config.protocol)
        means = tally.means(self.trainer, self.device)
        for source, values in means.items():
            for name, value in values.items():
                self.log(f"{prefix}/{source}/{name}", value, rank_zero_only=True)
        if means:
            em = torch.stack([v["em"] for v in means.values()]).mean()
            self.log(f"{prefix}/em", em, prog_bar=True, rank_zero_only=True)
