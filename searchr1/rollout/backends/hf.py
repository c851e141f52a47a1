"""Hugging Face ``generate`` backend: samples with the live policy module (CPU or GPU).

Batches are left-padded (prompts sorted by length to limit padding), decoded with the KV cache, and
stopped by transformers' ``StopStringCriteria`` right after the token that completes a stop string.

Log-probs: for each sampled token the backend records ``log_softmax(logits / temperature)[token]``
from the model's raw float32 logits at that step (``log_softmax(logits)`` when decoding greedily). This
is the temperature-scaled full-vocabulary distribution — the quantity a teacher-forced forward pass
recomputes as ``log_softmax(logits / T)``; it is NOT renormalised over the top-k / top-p set.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessor, StoppingCriteria, StopStringCriteria

from searchr1.rollout.backends.base import GenerationOutput, SamplingParams


class _LogprobRecorder(LogitsProcessor):
    """Records the chosen token's log-prob each step, keeping at most one (B, V) tensor alive.

    Runs first among the processors (custom processors precede the sampling warpers in ``generate``), so
    it sees raw logits. The token sampled at step ``s`` is visible as ``input_ids[:, -1]`` at step ``s+1``.
    """

    def __init__(self, prompt_len: int, temperature: float) -> None:
        self.prompt_len, self.temperature = prompt_len, temperature
        self.pending: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - self.prompt_len
        if step - 1 in self.pending:
            self.values[step - 1] = self.pending.pop(step - 1).gather(1, input_ids[:, -1:]).squeeze(1)
        self.pending[step] = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def collect(self, new_tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) log-probs of ``new_tokens`` (B, T)."""
        for step, lp in self.pending.items():
            if step < new_tokens.shape[1]:
                self.values[step] = lp.gather(1, new_tokens[:, step : step + 1]).squeeze(1)
        cols = [self.values[s] for s in range(new_tokens.shape[1])]
        return torch.stack(cols, dim=1) if cols else new_tokens.new_zeros(new_tokens.shape, dtype=torch.float32)


class _StopRecorder(StoppingCriteria):
    """Wraps ``StopStringCriteria`` and remembers, per row, how many new tokens ended with a stop string."""

    def __init__(self, inner: StopStringCriteria, prompt_len: int, batch: int, device: torch.device) -> None:
        self.inner, self.prompt_len = inner, prompt_len
        self.end = torch.full((batch,), -1, dtype=torch.long, device=device)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor | None, **kwargs: Any) -> torch.Tensor:
        done = self.inner(input_ids, scores)
        self.end[done & (self.end < 0)] = input_ids.shape[1] - self.prompt_len
        return done


class HFBackend:
    """Generation with ``transformers`` ``generate`` on the given (live) model.

    Args:
        model: a causal LM (the training module's policy; weights are shared, so ``sync_weights`` is a no-op).
        tokenizer: its tokenizer (pad/eos ids and stop-string matching).
        batch_size: most prompts per ``generate`` call.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, batch_size: int = 64) -> None:
        if batch_size <= 0:
            raise ValueError(f"HFBackend batch_size must be positive, got {batch_size}")
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos_ids = eos if isinstance(eos, list) else ([eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos_ids:
            eos_ids = [tokenizer.eos_token_id, *eos_ids]
        if not eos_ids:
            raise ValueError("HFBackend needs an eos token id (tokenizer.eos_token or model.generation_config)")
        self.eos_ids: list[int] = eos_ids
        self.pad_id: int = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
        self._stop_criteria: dict[tuple[str, ...], StopStringCriteria] = {}

    def _stop_criterion(self, stop: list[str]) -> StopStringCriteria:
        """Stateless ``StopStringCriteria`` for ``stop``, built once (building scans the whole vocabulary)."""
        key = tuple(stop)
        if key not in self._stop_criteria:
            self._stop_criteria[key] = StopStringCriteria(self.tokenizer, list(stop))
        return self._stop_criteria[key]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @contextlib.contextmanager
    def _generation_mode(self, seed: int | None) -> Iterator[None]:
        """Eval mode, no grad and (with a seed) a forked RNG; restores the previous state afterwards."""
        was_training = self.model.training
        devices = [self.device] if self.device.type == "cuda" else []
        rng = torch.random.fork_rng(devices=devices) if seed is not None else contextlib.nullcontext()
        self.model.eval()
        try:
            with rng, torch.no_grad():
                if seed is not None:
                    torch.manual_seed(seed)
                yield
        finally:
            self.model.train(was_training)

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[GenerationOutput]:
        """Continue every prompt; see the module docstring for what the log-probs are."""
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        results: list[GenerationOutput | None] = [None] * len(prompts)
        with self._generation_mode(params.seed):
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                for i, out in zip(idx, self._generate_batch([prompts[i] for i in idx], params)):
                    results[i] = out
        return results  # type: ignore[return-value]

    def _generation_config(self, params: SamplingParams) -> GenerationConfig:
        sampling = {"temperature": params.temperature, "top_p": params.top_p, "top_k": params.top_k}
        return GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            do_sample=params.do_sample,
            **(sampling if params.do_sample else {}),
            # explicit neutral values: unset (None) fields would be filled from the model's generation_config
            # (e.g. Qwen instruct's repetition_penalty=1.05), changing the distribution we report
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            typical_p=1.0,
            epsilon_cutoff=0.0,
            eta_cutoff=0.0,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
            bos_token_id=None,
            use_cache=True,
            return_dict_in_generate=True,
        )

    def _generate_batch(self, prompts: list[list[int]], params: SamplingParams) -> list[GenerationOutput]:
        width, device = max(len(p) for p in prompts), self.device
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):
            input_ids[row, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            attention_mask[row, width - len(p) :] = 1
        temperature = params.temperature if params.do_sample else 1.0
        recorder = _LogprobRecorder(width, temperature)
        stops = []
        if params.stop:
            stops = [_StopRecorder(self._stop_criterion(params.stop), width, len(prompts), device)]
        out = self.model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            generation_config=self._generation_config(params),
            logits_processor=[recorder],
            stopping_criteria=stops,
        )
        new_tokens = out.sequences[:, width:]
        logprobs = recorder.collect(new_tokens).cpu()
        stop_end = stops[0].end.cpu() if stops else torch.full((len(prompts),), -1)
        new_tokens = new_tokens.cpu()
        return [
            self._row_output(new_tokens[r], logprobs[r], int(stop_end[r]), params.stop) for r in range(len(prompts))
        ]

    def _row_output(
        self, tokens: torch.Tensor, logprobs: torch.Tensor, stop_end: int, stop: list[str]
    ) -> GenerationOutput:
        """Cut one row after its first EOS or stop string (whichever came first), else keep all tokens."""
        is_eos = torch.isin(tokens, torch.tensor(self.eos_ids))
        eos_end = int(is_eos.nonzero()[0, 0]) + 1 if bool(is_eos.any()) else -1
        ends = {"eos": eos_end, "stop": stop_end}
        reason = min((k for k, v in ends.items() if v > 0), key=lambda k: ends[k], default="length")
        end = ends[reason] if reason != "length" else tokens.shape[0]
        ids = tokens[:end].tolist()
        stop_string = None
        if reason == "stop":
            tail = self.tokenizer.decode(ids[-64:], skip_special_tokens=False)
            stop_string = max((s for s in stop if s in tail), key=tail.rfind, default=None)
        return GenerationOutput(ids, logprobs[:end].tolist(), reason, stop_string)

    def sync_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """No-op: the backend samples with the live policy module."""

    def sleep(self) -> None:
        """No-op: generate keeps no memory between calls."""

    def wake_up(self) -> None:
        """No-op."""
