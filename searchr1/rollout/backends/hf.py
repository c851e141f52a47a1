"""Hugging Face backend: samples with the live policy module (CPU or GPU) in our own decode loop.

The loop (:mod:`searchr1.rollout.backends.hf_loop`) keeps every row's KV cache across turns, lets each row
continue as soon as its own turn is handled (no turn barrier), drops finished rows at once and admits
queued prompts in their place. Stop strings end a turn right after the token that completes one.
``generate`` is the single-turn case of ``generate_multiturn``.

Log-probs: for each sampled token the backend records ``log_softmax(logits / temperature)[token]``
from the model's float32 logits at that step (``log_softmax(logits)`` when decoding greedily). This
is the temperature-scaled full-vocabulary distribution — the quantity a teacher-forced forward pass
recomputes as ``log_softmax(logits / T)``; it is NOT renormalised over the top-k / top-p set.
Sampling follows ``transformers``: temperature, then top-k, then top-p; no other processors (a model's
hub ``generation_config`` such as a repetition penalty is deliberately not applied).

Models with sliding-window attention layers are rejected (the packed cache assumes full attention);
use the vLLM backend for those.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from searchr1.rollout.backends.base import Continuation, GenerationOutput, ReadyPoll, SamplingParams, TurnCallback
from searchr1.rollout.backends.hf_loop import StopMatcher, decode_loop


class HFBackend:
    """Generation with the given (live) ``transformers`` causal LM.

    Args:
        model: a causal LM (the training module's policy; weights are shared, so ``sync_weights`` is a no-op).
        tokenizer: its tokenizer (pad/eos ids and stop-string matching).
        batch_size: most rows decoded together; further prompts join as rows finish.
        lockstep: set by the training module when the model is sharded (every forward is a collective): the
            decode loop then steps in sync with the other ranks (see ``decode_loop``).
    """

    shares_policy_weights = True
    """Samples with the live policy module: no weight sync needed."""
    supports_pending_turns = True
    """``generate_multiturn`` takes ``poll=``: rows whose search is in flight wait outside the batch."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, batch_size: int = 64, lockstep=None) -> None:
        if batch_size <= 0:
            raise ValueError(f"HFBackend batch_size must be positive, got {batch_size}")
        self.model, self.tokenizer, self.batch_size, self.lockstep = model, tokenizer, batch_size, lockstep
        self.idle_forwards = 0
        """Dummy forwards run so far to keep step with other ranks (lockstep only)."""
        layer_types = getattr(getattr(model, "config", None), "layer_types", None) or []
        if any("sliding" in str(t) for t in layer_types):
            raise ValueError(
                "HFBackend does not support sliding-window attention layers "
                f"(config.layer_types={sorted(set(layer_types))}); use backend='vllm' for this model"
            )
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos_ids = eos if isinstance(eos, list) else ([eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos_ids:
            eos_ids = [tokenizer.eos_token_id, *eos_ids]
        if not eos_ids:
            raise ValueError("HFBackend needs an eos token id (tokenizer.eos_token or model.generation_config)")
        self.eos_ids: list[int] = eos_ids
        self.pad_id: int = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
        self._stop_matchers: dict[tuple[str, ...], StopMatcher] = {}

    def _stop_matcher(self, stop: list[str]) -> StopMatcher | None:
        """The matcher for ``stop``, built once (building decodes the whole vocabulary)."""
        if not stop:
            return None
        key = tuple(stop)
        if key not in self._stop_matchers:
            self._stop_matchers[key] = StopMatcher(self.tokenizer, stop)
        return self._stop_matchers[key]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @contextlib.contextmanager
    def _generation_mode(self) -> Iterator[None]:
        """Eval mode and no grad; restores the previous training mode afterwards."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.model.train(was_training)

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[GenerationOutput]:
        """Continue every prompt for one turn; see the module docstring for what the log-probs are."""
        results: list[GenerationOutput | None] = [None] * len(prompts)

        def keep(ended: list[tuple[int, GenerationOutput]]) -> list[Continuation | None]:
            for index, out in ended:
                results[index] = out
            return [None] * len(ended)

        self.generate_multiturn(prompts, params, keep)
        return results  # type: ignore[return-value]

    def generate_multiturn(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        on_turn_end: TurnCallback,
        max_new_tokens: list[int] | None = None,
        poll: ReadyPoll | None = None,
    ) -> None:
        """Decode all prompts over as many turns as ``on_turn_end`` continues them (see ``MultiTurnBackend``).

        Seeded sampling gives row ``i`` its own generator (``seed + i``), so its tokens do not depend on the
        moments other rows leave or re-enter the batch.
        """
        if any(len(p) == 0 for p in prompts):
            raise ValueError("HFBackend got an empty prompt; every prompt needs at least one token id")
        limits = list(max_new_tokens) if max_new_tokens is not None else [params.max_new_tokens] * len(prompts)
        if len(limits) != len(prompts) or any(m <= 0 for m in limits):
            raise ValueError(f"need one positive max_new_tokens per prompt, got {limits} for {len(prompts)} prompts")
        row_seed = params.seed if params.do_sample else None
        with self._generation_mode():
            self.idle_forwards += decode_loop(
                self.model,
                [list(p) for p in prompts],
                limits,
                params,
                on_turn_end,
                batch_size=self.batch_size,
                eos_ids=set(self.eos_ids),
                pad_id=self.pad_id,
                stops=self._stop_matcher(params.stop),
                generator=None,
                lockstep=self.lockstep,
                poll=poll,
                row_seed=row_seed,
            )

    def sync_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """No-op: the backend samples with the live policy module."""

    def sleep(self) -> None:
        """No-op: the decode loop keeps no memory between calls."""

    def wake_up(self) -> None:
        """No-op."""
