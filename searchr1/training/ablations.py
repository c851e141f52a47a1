"""Ablation switches of the Search-R1 recipe, kept outside the training module: no search results, no masking.

* :class:`~searchr1.retrieval.null.EmptyRetriever` — a search engine that returns no passages: the policy still
  calls ``<search>`` but every ``<information>`` block is empty (the "no-search" ablation: the same pipeline without
  retrieved knowledge). It lives in ``retrieval``; configs may name it by this module's path too.
* :func:`unmask_observations` / :class:`UnmaskedSearchR1Module` — retrieved-token masking switched off: the RL
  loss also covers the ``<information>`` tokens (Search-R1's Table 4 ablation, "w/o retrieved-token masking").
"""

from __future__ import annotations

import dataclasses

from searchr1.retrieval.null import EmptyRetriever
from searchr1.rollout import RolloutBatch
from searchr1.training.module import SearchR1Module

__all__ = ["EmptyRetriever", "UnmaskedSearchR1Module", "unmask_observations"]  # EmptyRetriever: config class_path


def unmask_observations(batch: RolloutBatch) -> RolloutBatch:
    """The batch with ``loss_mask`` = ``response_mask``: every response token (observations too) is trained on."""
    return dataclasses.replace(batch, loss_mask=batch.response_mask.clone())


class UnmaskedSearchR1Module(SearchR1Module):
    """``SearchR1Module`` whose training rollouts are unmasked (:func:`unmask_observations`); same arguments.

    Note the reference/old log-prob passes then also cover observation tokens (their sampling log-probs from the
    engine stay 0.0 and are unused: the update recomputes old log-probs or is on-policy).
    """

    def rollout(self, batch: list, train: bool) -> RolloutBatch:
        out = super().rollout(batch, train)
        return unmask_observations(out) if train else out
