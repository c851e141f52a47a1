"""Global whitening on 2 CPU ranks (gloo): each rank's advantages equal one process's over the whole batch.

Run: ``python -m torch.distributed.run --standalone --nproc_per_node 2 whiten_worker.py OUT``.

The global batch is 12 random trajectories in 6 groups of 2 (policy chunks and ``<information>`` observations of
random lengths, random scores and critic values). Rank r holds groups r, r+2, r+4 (a GRPO group never spans ranks),
padded to its own length. For every estimator, ``build_update_batch`` runs on the rank's shard with the ranks'
``Lockstep`` (the training path) and without it (per-rank whitening, the old behaviour), and once in this process
over the whole batch. ``OUT/rank{r}.json``: the largest difference from the whole-batch advantages on each
trajectory's response tokens, with and without the lockstep, per estimator.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from searchr1.distributed import Lockstep
from searchr1.rollout import RolloutBatch, Trajectory
from searchr1.training.steps import build_update_batch

GROUPS, N = 6, 2
ESTIMATORS = ("gae", "reinforce_pp", "grpo", "rloo")


def make_trajectories() -> tuple[list[Trajectory], list[list[float]], list[float]]:
    """The global batch: trajectories, per-token critic values (one per response token), scores."""
    g = torch.Generator().manual_seed(11)
    trajectories, values, scores = [], [], []
    for i in range(GROUPS * N):
        t = Trajectory(prompt_ids=[5] * int(torch.randint(2, 6, (1,), generator=g)), group_id=i // N, prompt_index=0)
        for turn in range(int(torch.randint(1, 4, (1,), generator=g))):
            n = int(torch.randint(1, 8, (1,), generator=g))
            t.append(torch.randint(3, 50, (n,), generator=g).tolist(), "policy", [-1.0] * n)
            if turn < 2:
                t.append([9] * int(torch.randint(1, 5, (1,), generator=g)), "observation")
        trajectories.append(t)
        values.append(torch.randn(len(t.response_ids), generator=g).tolist())
        scores.append(float(torch.randint(0, 2, (1,), generator=g)))
    return trajectories, values, scores


def advantages(rows: list[int], lockstep: Lockstep | None, estimator: str) -> list[list[float]]:
    """Advantages of trajectories ``rows`` (batched together), each cut to its own response length."""
    trajectories, values, scores = make_trajectories()
    batch = RolloutBatch.from_trajectories([trajectories[i] for i in rows], pad_token_id=0)
    width = batch.loss_mask.shape[1]
    critic = torch.tensor([values[i] + [0.0] * (width - len(values[i])) for i in rows])
    update, _ = build_update_batch(
        batch, torch.tensor([scores[i] for i in rows]), estimator, old_logprobs=None, ref_logprobs=None,
        values=critic if estimator == "gae" else None, kl_coef=0.0, kl_kind="k1", kl_in_reward=False,
        gamma=0.99, lam=0.95, lockstep=lockstep,
    )  # fmt: skip
    return [update.advantages[k, : len(values[i])].tolist() for k, i in enumerate(rows)]


def max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def main() -> None:
    out = Path(sys.argv[1])
    dist.init_process_group("gloo", timeout=timedelta(seconds=20))
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = [i for i in range(GROUPS * N) if (i // N) % world == rank]
    lockstep = Lockstep("cpu")
    report = {"rows": mine}
    for estimator in ESTIMATORS:
        whole = advantages(list(range(GROUPS * N)), None, estimator)
        reference = [whole[i] for i in mine]
        report[estimator] = {
            "global": max_diff(advantages(mine, lockstep, estimator), reference),
            "per_rank": max_diff(advantages(mine, None, estimator), reference),
        }
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
