"""A backend that replays fixed continuations (tests drive every engine branch with it).

Each prompt of each ``generate`` call takes the next scripted response, in order (row by row, call by
call). Stop strings, EOS and ``max_new_tokens`` are honoured the way a real backend would: the ids are
cut right after the token that completes a stop string, after an EOS id, or at the token limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from searchr1.rollout.backends.base import GenerationOutput, SamplingParams


class ScriptedBackend:
    """Replays ``responses`` one per prompt row.

    Args:
        responses: continuations, each a string (tokenized once here, needs ``tokenizer``) or a list of ids.
        tokenizer: tokenizer used to encode string responses and to find stop strings.
        logprob: log-prob reported for every returned token.
    """

    def __init__(self, responses: Sequence[str | list[int]], tokenizer: Any, logprob: float = -1.0) -> None:
        self.tokenizer = tokenizer
        self.logprob = logprob
        self.responses = [
            list(r) if not isinstance(r, str) else list(tokenizer(r, add_special_tokens=False)["input_ids"])
            for r in responses
        ]
        self.calls: list[list[list[int]]] = []
        self._next = 0

    def _cut(self, ids: list[int], params: SamplingParams) -> GenerationOutput:
        eos = self.tokenizer.eos_token_id
        for end in range(1, len(ids) + 1):
            if end > params.max_new_tokens:
                break
            tail = self.tokenizer.decode(ids[max(0, end - 64) : end], skip_special_tokens=False)
            hit = next((s for s in params.stop if s in tail), None)
            if hit is not None:
                return GenerationOutput(ids[:end], [self.logprob] * end, "stop", hit)
            if ids[end - 1] == eos:
                return GenerationOutput(ids[:end], [self.logprob] * end, "eos")
        n = min(len(ids), params.max_new_tokens)
        return GenerationOutput(ids[:n], [self.logprob] * n, "length")

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[GenerationOutput]:
        """Return the next scripted response for each prompt (raises when the script runs out)."""
        if self._next + len(prompts) > len(self.responses):
            raise RuntimeError(
                f"ScriptedBackend ran out of responses: {len(self.responses)} scripted, "
                f"{self._next + len(prompts)} requested; add more responses to the script"
            )
        self.calls.append([list(p) for p in prompts])
        picked = self.responses[self._next : self._next + len(prompts)]
        self._next += len(prompts)
        return [self._cut(ids, params) for ids in picked]

    def sync_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """No weights to load."""

    def sleep(self) -> None:
        """Nothing to free."""

    def wake_up(self) -> None:
        """Nothing to re-acquire."""
