"""Rollout configuration (one dataclass, validated on construction)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RolloutConfig:
    """Knobs of the multi-turn search rollout (defaults follow Search-R1's ``train_ppo.sh``)."""

    max_turns: int = 4
    """Turns in which a ``<search>`` is executed; one more, final turn follows where it is not."""
    max_response_tokens: int = 500
    """Most tokens the policy generates in one turn (Search-R1 ``max_response_length``)."""
    max_obs_tokens: int = 500
    """Observation tokens kept per search (longer ``<information>`` blocks are cut at the end)."""
    max_total_tokens: int = 4096
    """Cap on prompt + response tokens; a trajectory reaching it ends with finish_reason ``"truncated"``."""
    topk: int = 3
    """Passages retrieved per query."""
    temperature: float = 1.0
    """Sampling temperature (> 0)."""
    top_p: float = 1.0
    """Nucleus sampling mass in (0, 1]."""
    top_k: int = 0
    """Top-k sampling (0 disables)."""
    do_sample: bool = True
    """Sample (True) or decode greedily (False)."""
    on_search_error: str = "observe"
    """``"observe"``: a failed search (``RetrievalError``) becomes ``Search failed: …`` in the observation;
    ``"raise"``: the error propagates."""
    continuous_batching: bool = True
    """With a backend that supports it (``HFBackend``), each trajectory continues as soon as its own search
    returns, with its KV cache kept across turns; False runs turn by turn (a barrier per turn)."""
    async_search: bool = True
    """With continuous batching on a backend that can park rows (``HFBackend``, ``VLLMBackend``), searches run on
    a worker thread as soon as a row ends its turn while the other rows keep decoding; False runs them between
    decoding steps (every row waits for each search call)."""
    max_prompt_tokens: int = 2048
    """Longer prompts are left-truncated to this many tokens (keeping the question's end and the
    assistant header) with a warning."""
    protocol: str = "search_r1"
    """Text protocol (:func:`searchr1.protocols.get_protocol`): ``"search_r1"`` (Search-R1's tags) or
    ``"tool_call"`` (the model's native tool calling through its chat template)."""

    def __post_init__(self) -> None:
        from searchr1.protocols import get_protocol

        get_protocol(self.protocol)  # unknown names list the valid ones
        for name in ("max_response_tokens", "max_obs_tokens", "max_total_tokens", "topk"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"RolloutConfig.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.max_turns, int) or self.max_turns < 0:
            raise ValueError(f"RolloutConfig.max_turns must be >= 0, got {self.max_turns}")
        if not self.temperature > 0:
            raise ValueError(
                f"RolloutConfig.temperature must be > 0 (use do_sample=False for greedy), got {self.temperature}"
            )
        if not 0 < self.top_p <= 1:
            raise ValueError(f"RolloutConfig.top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"RolloutConfig.top_k must be >= 0 (0 disables), got {self.top_k}")
        if self.on_search_error not in ("observe", "raise"):
            raise ValueError(
                f"RolloutConfig.on_search_error must be 'observe' or 'raise', got {self.on_search_error!r}"
            )
        if not 0 < self.max_prompt_tokens < self.max_total_tokens:
            raise ValueError(
                f"RolloutConfig.max_prompt_tokens ({self.max_prompt_tokens}) must be positive and smaller than "
                f"max_total_tokens ({self.max_total_tokens}) so that the policy can generate at least one token"
            )
