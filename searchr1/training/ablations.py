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
    """The batch with ``loss_mask`` = ``response_mask``: every response token (observations too) is trained on.

    ``rollout_logprobs`` is dropped: the engine's sampling log-probs exist only for the tokens the policy sampled
    (0.0 on observations), so over this mask the rollout-mismatch ratios would compare the policy with a
    log-prob of 0 on every observation token (mismatch KL ~2-3 on the learning demo, false ``mismatch_kl``
    alarms). Without them the rollout correction and its metrics are off in this ablation.
    """
    return dataclasses.replace(batch, loss_mask=batch.response_mask.clone(), rollout_logprobs=None)


class UnmaskedSearchR1Module(SearchR1Module):
    """``SearchR1Module`` whose training rollouts are unmasked (:func:`unmask_observations`); same arguments.

    Note the reference/old log-prob passes then also cover observation tokens; the engine's sampling log-probs
    are dropped (see :func:`unmask_observations`).
    """

    def rollout(self, batch: list, train: bool) -> RolloutBatch:
        out = super().rollout(batch, train)
        return unmask_observations(out) if train else out
