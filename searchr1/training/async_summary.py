"""The arithmetic of the asynchronous run's metrics and summary (:mod:`~searchr1.training.async_rollout`): rank
merging of counts and staleness histograms, and server shares from two ``/metrics`` reads."""

from __future__ import annotations

import torch

from searchr1.distributed import Lockstep


def merge_ranks(
    lockstep: Lockstep | None, counts: list[int], histograms: list[dict[int, int]], means: list[float]
) -> tuple[list[int], list[dict[int, int]], list[float]]:
    """Counts and histograms (count per staleness) summed over the ranks, ``means`` averaged (this rank's own
    values with one process). Two collectives: the histogram width, then one sum."""
    if lockstep is None or not lockstep.active:
        return counts, [dict(h) for h in histograms], means
    width = lockstep.max([max([-1, *(k for h in histograms for k in h)]) + 1])[0]
    flat = [float(c) for c in counts] + [float(h.get(k, 0)) for h in histograms for k in range(width)]
    total = lockstep.sum(torch.tensor([*flat, *means, 1.0], dtype=torch.float64)).tolist()
    n = len(counts)
    merged = [
        {k: int(v) for k, v in enumerate(total[n + i * width : n + (i + 1) * width]) if v}
        for i in range(len(histograms))
    ]
    ranks = total[-1]
    return [int(c) for c in total[:n]], merged, [m / ranks for m in total[n + len(histograms) * width : -1]]


def server_shares(before: list[dict[str, float]], after: list[dict[str, float]]) -> dict[str, float]:
    """Idle share and tokens per second of the servers between two ``/metrics`` reads (summed over servers)."""

    def delta(name: str) -> float:
        return sum(a.get(name, 0.0) - b.get(name, 0.0) for a, b in zip(after, before))

    wall, busy = delta("searchr1_rollout_wall_seconds_total"), delta("searchr1_rollout_busy_seconds_total")
    tokens, cpu = delta("searchr1_rollout_tokens_total"), delta("searchr1_rollout_cpu_seconds_total")
    return {
        "async/server_idle_share": 1.0 - busy / wall if wall > 0 else 0.0,
        "async/server_cpu_share": cpu / wall if wall > 0 else 0.0,
        "async/server_tokens_per_second": tokens / (wall / max(len(after), 1)) if wall > 0 else 0.0,
    }
