"""A backend that writes scripted turns per question (the SFT teacher), whatever the real observations were.

The rollout engine runs as usual around it (real retriever, real observations with ``loss_mask = 0``), so the
trajectories it yields have exactly the RL layout: :mod:`searchr1.training.sft` trains on them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from searchr1.protocols import question_in_prompt
from searchr1.rollout.backends.base import GenerationOutput, SamplingParams


class TeacherBackend:
    """A generation backend that writes scripted turns per question, whatever the (real) observations were.

    The question is read from the prompt (``Question: <q>`` of the instruction, in either protocol) and the turn
    index is the number of turns ended by a stop string after the instruction (the earlier search turns), so it
    works for any batch composition. A turn whose text ends in no stop string is a whole message (a ``tool_call``
    answer turn) and is closed with the tokenizer's EOS, as a chat model ends its message.

    Args:
        turns: normalised question text (with ``?``) → the text of each turn (each ending in an action).
        tokenizer: the policy tokenizer (turn texts are encoded with it, without special tokens).
    """

    def __init__(self, turns: dict[str, list[str]], tokenizer: Any) -> None:
        self.turns, self.tokenizer = turns, tokenizer

    def _turn_text(self, context: str, stops: Sequence[str]) -> str:
        question, after = question_in_prompt(context)
        if question is None or question not in self.turns:
            raise KeyError(f"TeacherBackend has no script for the prompt's question ({context[:200]!r}...)")
        script = self.turns[question]
        seen = sum(after.count(s) for s in stops)  # turns ended by a stop string after the instruction
        return script[min(seen, len(script) - 1)]

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[GenerationOutput]:
        """The next scripted turn of each prompt (log-prob 0.0: the teacher is certain)."""
        outs = []
        for ids in prompts:
            text = self._turn_text(self.tokenizer.decode(ids, skip_special_tokens=False), params.stop)
            full = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            stop = next((s for s in params.stop if text.endswith(s)), None)
            if stop is None and self.tokenizer.eos_token_id is not None:
                full.append(self.tokenizer.eos_token_id)
            new = full[: params.max_new_tokens]
            if len(new) < len(full):
                reason = "length"
            else:
                reason = "stop" if stop is not None else "eos"
            outs.append(GenerationOutput(new, [0.0] * len(new), reason, stop if reason == "stop" else None))
        return outs

    def sync_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """No weights."""

    def sleep(self) -> None:
        """Nothing to free."""

    def wake_up(self) -> None:
        """Nothing to re-acquire."""
