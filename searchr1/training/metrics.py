"""What a training step and an evaluation epoch log: the step's metric dict and the per-dataset evaluation tally."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from searchr1.rewards import score_trajectory
from searchr1.rewards.search_quality import OUTCOMES, assess, gold_titles, summarize
from searchr1.rollout import RolloutBatch

EVAL_FIELDS = ("count", "em", "f1", "searches", "answer_in_retrieved", *(f"failure_{o}" for o in OUTCOMES[1:]))
"""Per data source sums of an evaluation epoch: the count, then per-trajectory values (means after reduction)."""


def search_quality_metrics(
    rollout: RolloutBatch,
    golden_answers: Sequence[Sequence[str]],
    metadata: Sequence[Mapping] | None = None,
    protocol: str = "search_r1",
) -> dict[str, float]:
    """``search/<name>`` means of :func:`searchr1.rewards.search_quality.summarize` over the rollout.

    Every name is present, NaN where no trajectory has the value (``searches_correct`` in a step without a correct
    answer, ``gold_recall`` without gold titles); the module logs the finite ones of each rank without reduction.

    Args:
        rollout: the step's rollout (B trajectories).
        golden_answers: per trajectory (row order).
        metadata: per trajectory, the example's metadata (gold titles); None: no gold recall.
        protocol: the rollout's text protocol.
    """
    metas = metadata if metadata is not None else [{}] * len(rollout.trajectories)
    qualities = []
    for traj, golds, meta in zip(rollout.trajectories, golden_answers, metas):
        em = score_trajectory(traj, golds).em
        qualities.append(assess(traj, golds, em > 0, gold_titles(meta), protocol))
    return {f"search/{k}": v for k, v in summarize(qualities).items()}


def step_metrics(
    rollout: RolloutBatch,
    scores: Tensor,
    token_rewards: Tensor,
    stats: dict[str, float],
    timings: dict[str, float],
    golden_answers: Sequence[Sequence[str]],
    kl_path: str,
    backend: object,
) -> dict[str, float]:
    """The logged metrics of one training step.

    Args:
        rollout: the step's rollout (B trajectories).
        scores: (B,) outcome rewards; token_rewards: (B, R) rewards per response token (KL folded in or not).
        stats: the updater's averaged statistics; timings: seconds per stage.
        golden_answers: per trajectory (row order of ``rollout``).
        kl_path: ``reward``, ``loss`` or ``off`` (which KL path is active).
        backend: the generation backend (its lockstep idle-forward count is logged when it has one).
    """
    em = [score_trajectory(t, g).em for t, g in zip(rollout.trajectories, golden_answers)]
    metrics = {f"rollout/{k}": float(v) for k, v in rollout.metrics().items()}
    metrics.update({f"train/{k}": float(v) for k, v in stats.items()})
    metrics.update({f"time/{k}": v for k, v in timings.items()})
    metrics["train/reward"] = scores.mean().item()
    metrics["train/em"] = sum(em) / max(len(em), 1)
    metrics["train/response_length"] = rollout.response_mask.sum(-1).float().mean().item()
    metrics["train/token_reward_sum"] = token_rewards.sum(-1).mean().item()
    if getattr(backend, "lockstep", None) is not None:  # dummy decode forwards so far (ranks ended unevenly)
        metrics["rollout/lockstep_idle_forwards"] = float(backend.idle_forwards)
    metrics["train/kl_in_reward"] = float(kl_path == "reward")
    metrics["train/kl_in_loss"] = float(kl_path == "loss")
    return metrics


@dataclass
class EvalTally:
    """Per data source sums of :data:`EVAL_FIELDS` over an evaluation epoch (this rank).

    Args:
        protocol: the rollout's text protocol (where the observation blocks are).
    """

    sums: dict[str, Tensor] = field(default_factory=dict)
    protocol: str = "search_r1"

    def add(self, source: str, values: Mapping[str, float], device: torch.device) -> None:
        """Add one trajectory's ``values`` (every name of :data:`EVAL_FIELDS` but ``count``)."""
        row = torch.tensor([1.0, *(float(values[name]) for name in EVAL_FIELDS[1:])], device=device)
        self.sums[source] = self.sums.get(source, torch.zeros(len(EVAL_FIELDS), device=device)) + row

    def add_rollout(self, rollout: RolloutBatch, batch: Sequence, device: torch.device) -> None:
        """Score every trajectory of an evaluation rollout of ``batch`` (``QAExample``s), skipping padding rows."""
        for traj, i in zip(rollout.trajectories, rollout.prompt_index.tolist()):
            example = batch[int(i)]
            if example.metadata.get("is_padding"):
                continue
            score = score_trajectory(traj, example.golden_answers)
            quality = assess(traj, example.golden_answers, score.em > 0, gold_titles(example.metadata), self.protocol)
            values = {"em": score.em, "f1": score.f1, "searches": traj.num_searches}
            values["answer_in_retrieved"] = float(quality.answer_in_retrieved)
            values.update({f"failure_{o}": float(quality.outcome == o) for o in OUTCOMES[1:]})
            self.add(example.data_source, values, device)

    def means(self, trainer, device: torch.device) -> dict[str, dict[str, Tensor]]:
        """``{source: {field: mean}}`` (:data:`EVAL_FIELDS` but ``count``) over all ranks (every rank calls it).

        The sources are gathered first so that every rank reduces the same ones in the same order, also a rank
        that saw none of a source's examples.
        """
        sources = sorted(self.sums)
        if trainer.world_size > 1:
            gathered: list[list[str]] = [[] for _ in range(trainer.world_size)]
            torch.distributed.all_gather_object(gathered, sources)
            sources = sorted({s for part in gathered for s in part})
        out = {}
        for source in sources:
            local = self.sums.get(source, torch.zeros(len(EVAL_FIELDS), device=device))
            total = trainer.strategy.reduce(local, reduce_op="sum")
            count = total[0].clamp(min=1)
            out[source] = {name: total[i] / count for i, name in enumerate(EVAL_FIELDS) if name != "count"}
        return out
