"""The generation-backend protocol the rollout engine talks to, plus its name registry.

A backend turns batches of token-id prompts into sampled continuations and returns the *exact*
ids it sampled with their log-probs, so the engine never decodes and re-tokenizes the history.
Backends: ``"hf"`` (transformers ``generate`` on the live policy), ``"vllm"`` (imported lazily),
``"scripted"`` (fixed continuations for tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from searchr1.registry import Registry


@dataclass
class SamplingParams:
    """How one ``generate`` call samples.

    Attributes:
        max_new_tokens: most tokens generated per prompt in this call.
        temperature: softmax temperature (> 0); ignored when ``do_sample`` is False.
        top_p: nucleus sampling mass (1.0 disables).
        top_k: keep the k most likely tokens (0 disables).
        do_sample: sample (True) or greedy decoding (False).
        stop: stop strings; generation ends right after the token that completes one of them, and
            that string's tokens are part of the returned ids.
        seed: when given, sampling is reproducible for the same prompts and params, without
            disturbing the global RNG state.
    """

    max_new_tokens: int = 500
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    do_sample: bool = True
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass
class GenerationOutput:
    """One prompt's continuation.

    Attributes:
        token_ids: exact sampled ids (including the stop string's tokens and the EOS token when
            sampled, never pad), length ``L``.
        logprobs: behaviour log-prob of each sampled id, length ``L``: ``log_softmax(logits / T)`` over the full
            vocabulary (what the trainer recomputes; not renormalised over top-k/top-p, see
            :mod:`~searchr1.rollout.backends.behaviour`).
        finish_reason: ``"stop"`` (a stop string ended it), ``"eos"`` or ``"length"``.
        stop_string: the stop string that ended it, else None.
        versions: policy version that sampled each token (length ``L``), from a backend whose weights change during
            generation (a rollout server, :mod:`searchr1.rollout.server`); None: all sampled by the current weights.
    """

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str
    stop_string: str | None = None
    versions: list[int] | None = None

    def __post_init__(self) -> None:
        if len(self.token_ids) != len(self.logprobs):
            raise ValueError(
                f"GenerationOutput has {len(self.token_ids)} token ids but {len(self.logprobs)} logprobs; "
                "a backend must return one log-prob per sampled token."
            )
        if self.versions is not None and len(self.versions) != len(self.token_ids):
            raise ValueError(f"GenerationOutput has {len(self.token_ids)} token ids but {len(self.versions)} versions")
        if self.finish_reason not in ("stop", "eos", "length"):
            raise ValueError(f"finish_reason must be 'stop', 'eos' or 'length', got {self.finish_reason!r}")


@dataclass
class Continuation:
    """What follows a finished turn in multi-turn generation.

    Attributes:
        token_ids: inserted ids (observation or invalid-action text, not sampled) fed before the next turn.
        max_new_tokens: most tokens the next turn may sample.
    """

    token_ids: list[int]
    max_new_tokens: int


class _Pending:
    """Type of :data:`PENDING`."""

    def __repr__(self) -> str:
        return "PENDING"


PENDING = _Pending()
"""A :data:`TurnCallback` answer for a row whose continuation is not known yet (its search is in flight): the
backend parks the row (its context kept) and decodes the others; the row's continuation arrives later from
the :data:`ReadyPoll`."""

TurnCallback = Callable[[list[tuple[int, GenerationOutput]]], list["Continuation | None | _Pending"]]
"""Called with ``(prompt index, turn output)`` for every row whose turn ended at one decoding step; returns,
in the same order, a :class:`Continuation`, None (the row is finished and leaves the batch) or, only when the
backend was given a :data:`ReadyPoll`, :data:`PENDING`."""

ReadyPoll = Callable[[bool], list[tuple[int, "Continuation | None"]]]
"""``poll(block)``: ``(prompt index, continuation or None)`` of the parked rows whose continuation is now known.
The backend calls it between decoding steps with ``block=False`` and, when it has nothing else to decode, with
``block=True`` (then it returns at least one row while any is parked)."""


@runtime_checkable
class GenerationBackend(Protocol):
    """What the rollout engine needs from an inference engine."""

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[GenerationOutput]:
        """Continue each token-id prompt (no padding) and return one output per prompt, in order."""
        ...

    def sync_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load policy weights (a no-op for backends sharing the training module)."""
        ...

    def sleep(self) -> None:
        """Free generation memory (KV cache, weights copies) during the policy update."""
        ...

    def wake_up(self) -> None:
        """Re-acquire what ``sleep`` freed before the next rollout."""
        ...


@runtime_checkable
class MultiTurnBackend(Protocol):
    """A backend that keeps each row's context (KV cache) across turns and lets rows continue independently."""

    def generate_multiturn(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        on_turn_end: TurnCallback,
        max_new_tokens: list[int] | None = None,
    ) -> None:
        """Decode all prompts; whenever rows end a turn, ``on_turn_end`` says how each one continues.

        ``max_new_tokens`` (one per prompt) bounds the first turn; default ``params.max_new_tokens``. Backends
        with ``supports_pending_turns = True`` also take ``poll=`` (a :data:`ReadyPoll`), with which
        ``on_turn_end`` may answer :data:`PENDING` for rows whose search is still running.
        """
        ...


BACKENDS: Registry[type] = Registry("generation backend")
# by import path: a backend's module (vLLM's above all) is imported only when the backend is asked for
BACKENDS.register_lazy("hf", "searchr1.rollout.backends.hf:HFBackend")
BACKENDS.register_lazy("vllm", "searchr1.rollout.backends.vllm:VLLMBackend")
BACKENDS.register_lazy("scripted", "searchr1.rollout.backends.scripted:ScriptedBackend")


def get_backend_class(name: str) -> type:
    """Return the backend class registered as ``name`` (imported lazily, so vllm is optional).

    Raises:
        ValueError: when ``name`` is not registered; the message lists the valid names.
    """
    return BACKENDS.get(name)


def build_backend(name: str, **kwargs: Any) -> GenerationBackend:
    """Instantiate the backend registered as ``name`` with its constructor arguments."""
    return get_backend_class(name)(**kwargs)
