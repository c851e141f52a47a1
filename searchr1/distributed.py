"""Agreement between ranks: the one primitive multi-rank code uses to stay in lockstep.

Every forward of a sharded model is a collective, and so is every all-reduce: ranks that run them a different
number of times hang until the process-group timeout. Code whose work depends on its own rank's data (decode
steps, micro-batch counts, a non-finite loss) first agrees with the other ranks through :class:`Lockstep`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class Lockstep:
    """Agreement between the ranks of the default process group; every method is a no-op with one process.

    Each call is one all-reduce (MAX) of a few integers, so every rank must make the same calls in the same order.

    Args:
        device: where the reduced tensor lives (the accelerator for NCCL, CPU for gloo).
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.active = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

    def max(self, values: list[int]) -> list[int]:
        """Element-wise maximum of ``values`` over the ranks (the values themselves with one process)."""
        if not self.active:
            return list(values)
        t = torch.tensor(values, dtype=torch.long, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.tolist()

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum of ``values`` (a small tensor, e.g. whitening moments) over the ranks; a new tensor."""
        if not self.active:
            return values.clone()
        t = values.detach().to(self.device).clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.to(values.device)

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is set on at least one rank."""
        return bool(self.max([int(flag)])[0])

    def raise_together(self, message: str | None, error: type[Exception] = FloatingPointError) -> None:
        """Raise ``error`` on every rank when any rank has a ``message`` (None: nothing wrong here).

        All ranks agree on the flag first (one all-reduce), then the failing ranks' messages are gathered, so every
        rank raises the same text, prefixed with the lowest failing rank's number when there are several ranks.
        """
        if not self.any(message is not None):
            return
        if not self.active:
            raise error(message)
        messages: list[str | None] = [None] * dist.get_world_size()
        dist.all_gather_object(messages, message)
        rank, text = next((r, m) for r, m in enumerate(messages) if m is not None)
        raise error(f"rank {rank}: {text} (all {len(messages)} ranks stop)")
