"""Keeping a generation engine's own copy of the policy weights current (vLLM), driven by the training module.

A backend that samples with the live policy module declares ``shares_policy_weights = True`` (``HFBackend``):
then everything here is a no-op. Any other backend holds its own weights, so the module:

- pushes the policy before the first rollout of ``fit``/``validate``/``test`` (the engine starts from the weights
  on disk, which after a resume or for a trained module are not the policy's) and after every update;
- puts the engine to sleep right after a training rollout (the log-prob passes and the update need the memory)
  and wakes it before the push.

This does not depend on the callbacks list: a config without the old ``WeightSync`` callback trains and samples
the same model. The push streams :func:`~searchr1.training.scaling.iter_full_params` (one full parameter at a
time; under FSDP2 a collective that every rank runs to the end, each feeding its own colocated engine).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from searchr1.rollout import RolloutConfig
from searchr1.rollout.backends.base import GenerationBackend, SamplingParams
from searchr1.rollout.backends.behaviour import configured_logprob_problem
from searchr1.training.scaling import SetupError, iter_full_params


def shares_policy_weights(backend: GenerationBackend | type) -> bool:
    """Whether ``backend`` (an instance or a class) samples with the live policy module itself."""
    return bool(getattr(backend, "shares_policy_weights", False))


def build_rollout_backend(
    name: str, kwargs: dict[str, Any], policy: torch.nn.Module, tokenizer: Any, lockstep, model_name_or_path: str
) -> GenerationBackend:
    """The registered backend ``name``: on the live ``policy`` when it shares its weights, else (vLLM) loading the
    starting weights from ``model_name_or_path`` (a ``tiny:`` preset resolved to its folder first)."""
    from searchr1.models import resolve_model_path
    from searchr1.rollout.backends.base import get_backend_class

    cls = get_backend_class(name)
    if shares_policy_weights(cls):
        return cls(policy, tokenizer, lockstep=lockstep, **kwargs)
    return cls(model=resolve_model_path(model_name_or_path), **kwargs)


def check_behaviour_logprobs(name: str, kwargs: dict[str, Any], config: RolloutConfig) -> None:
    """Refuse (``SetupError``, before any model loads) training sampling settings whose behaviour log-prob backend
    ``name`` cannot record as the trainer's full-vocabulary ``log_softmax(logits / T)``
    (:mod:`~searchr1.rollout.backends.behaviour`)."""
    from searchr1.rollout.backends.base import get_backend_class

    sampling = SamplingParams(
        temperature=config.temperature, top_p=config.top_p, top_k=config.top_k, do_sample=config.do_sample
    )
    problem = configured_logprob_problem(get_backend_class(name), kwargs, sampling)
    if problem is not None:
        raise SetupError(f"backend {name!r}: {problem}")


class EngineWeights:
    """The state of one engine's weight copy: stale until pushed, stale again after each update.

    Args:
        backend: the generation backend (its ``sync_weights``, ``sleep`` and ``wake_up`` are used).
    """

    def __init__(self, backend: GenerationBackend) -> None:
        self.backend = backend
        self.shared = shares_policy_weights(backend)
        self.stale = not self.shared
        self.pushes = 0

    def mark_stale(self) -> None:
        """The policy changed outside an update (e.g. a checkpoint was loaded)."""
        self.stale = not self.shared

    def before_rollout(self, policy: torch.nn.Module) -> None:
        """Wake the engine and push the policy if the engine's copy is not the policy's."""
        if self.stale:
            self.push(policy)
        elif not self.shared:
            self.backend.wake_up()

    def after_rollout(self) -> None:
        """Free the engine's memory for the passes and the update (vLLM sleep mode; a no-op elsewhere)."""
        if not self.shared:
            self.backend.sleep()

    def after_update(self, policy: torch.nn.Module) -> None:
        """Wake and push the updated policy, so the next rollout (training or validation) samples from it."""
        self.stale = not self.shared
        if not self.shared:
            self.push(policy)

    def push(self, policy: torch.nn.Module) -> None:
        """Wake the engine and stream every parameter into it; the iterator is always run to its end."""
        self.backend.wake_up()
        params = iter_full_params(policy)
        try:
            self.backend.sync_weights(params)
        finally:
            _drain(params)  # gathers are collectives: every rank must finish the walk even if the engine stopped
        self.stale = False
        self.pushes += 1


def _drain(params: Iterator) -> None:
    for _ in params:
        pass
