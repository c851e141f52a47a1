"""Rollout helpers for fault tests: a backend wrapper that runs a hook before chosen turns, scripted search runs."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from searchr1.rollout.backends.base import GenerationBackend, GenerationOutput, SamplingParams


class HookedBackend:
    """Runs ``hooks[i]()`` right before the ``i``-th ``generate`` call (0-based) of the wrapped backend.

    A hook at turn ``i`` fires after the searches of turn ``i - 1`` ran and before those of turn ``i`` (e.g.
    kill the retrieval server mid-rollout).

    Args:
        backend: the real backend.
        hooks: call index → function to run first (None: no hooks).
    """

    def __init__(self, backend: GenerationBackend, hooks: dict[int, Callable[[], None]] | None = None) -> None:
        self.backend = backend
        self.hooks = dict(hooks or {})
        self.calls = 0

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[GenerationOutput]:
        """Run the hook for this call (if any), then generate."""
        hook = self.hooks.get(self.calls)
        self.calls += 1
        if hook is not None:
            hook()
        return self.backend.generate(prompts, params)

    def sync_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Forwarded to the wrapped backend."""
        self.backend.sync_weights(named_tensors)

    def sleep(self) -> None:
        """Forwarded to the wrapped backend."""
        self.backend.sleep()

    def wake_up(self) -> None:
        """Forwarded to the wrapped backend."""
        self.backend.wake_up()


def search_then_answer_script(queries: list[str], answers: list[str], search_turns: int) -> list[str]:
    """Scripted responses for :class:`~searchr1.rollout.backends.scripted.ScriptedBackend`: every row searches
    ``search_turns`` times, then answers.

    Args:
        queries: one query per row (the batch, B rows).
        answers: one answer per row.
        search_turns: turns that search before the answer turn (use ``RolloutConfig(max_turns=search_turns)``).

    Returns:
        ``B * (search_turns + 1)`` responses in the backend's call order (turn by turn, row by row).
    """
    if len(queries) != len(answers):
        raise ValueError(f"{len(queries)} queries but {len(answers)} answers; give one of each per row")
    turns = [[f"<think>look it up</think><search> {q} </search>" for q in queries] for _ in range(search_turns)]
    turns.append([f"<think>done</think><answer> {a} </answer>" for a in answers])
    return [response for turn in turns for response in turn]
