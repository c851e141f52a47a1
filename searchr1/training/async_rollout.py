"""The trainer's end of asynchronous training: servers, the driver, weight pushes, metrics (docs/async.md).

``SearchR1Module(async_rollout=AsyncRolloutConfig(...))`` takes each step's rollout from
:class:`~searchr1.rollout.async_driver.AsyncRolloutDriver` instead of generating it in-process, and pushes its
weights to the rollout servers after each update. The loss needs nothing new: the behaviour log-probs the servers
recorded are the batch's ``rollout_logprobs``, the proximal policy is the trainer's weights at the start of the update
(the "old" log-probs, or the detached current ones with a single update), and ``algorithm.rollout_correction``
turns ``π_prox / π_behav`` into per-token importance weights — AReaL's decoupled PPO objective.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from searchr1.distributed import Lockstep
from searchr1.models.lora import is_lora, lora_scaling, merged_state
from searchr1.rollout import RolloutBatch, RolloutEngine
from searchr1.rollout.async_driver import AsyncRolloutDriver, Group, groups_to_batch
from searchr1.rollout.backends.behaviour import behaviour_logprob_problem
from searchr1.rollout.backends.vllm_transfer import GroupWeightSender
from searchr1.rollout.backends.vllm_weights import save_unshared
from searchr1.rollout.remote import RemoteServers, RolloutServerError, ServerProcesses
from searchr1.rollout.vllm_servers import VLLMRemoteServers
from searchr1.training.async_summary import merge_ranks, server_shares
from searchr1.training.rollout_servers import join_weight_group, start_servers
from searchr1.training.sharding import full_state_dict

SERVER_KINDS = ("hf", "vllm")
TRANSPORTS = ("auto", "file", "nccl", "gloo")


@dataclass
class AsyncRolloutConfig:
    """Knobs of asynchronous, disaggregated training (``model.async_rollout`` in a config)."""

    servers: int | list[str] = 1
    """How many local rollout server processes ``fit`` starts (on this machine's spare cores or GPUs), or the URLs of
    running servers (``http://host:port``) of kind ``server_kind``."""
    server_kind: str = "hf"
    """``hf``: our server (:mod:`searchr1.rollout.server`); ``vllm``: vLLM's OpenAI server with our worker extension
    (:mod:`searchr1.rollout.vllm_servers`; servers given by URL must run with the flags it starts them with)."""
    vllm_python: str | None = None
    """Python of the environment that has vLLM (e.g. ``.venv-vllm/bin/python``); default: the trainer's own."""
    vllm_args: list[str | int | float] = field(default_factory=list)
    """More ``vllm serve`` options of the local vLLM servers (``[--dtype, bfloat16, --max-model-len, 4096]``)."""
    server_devices: list[str] | None = None
    """``CUDA_VISIBLE_DEVICES`` of each local server (e.g. ``["4", "5", "6", "7"]``); None: inherited."""
    weight_transport: str = "auto"
    """How pushed weights reach vLLM servers: ``file`` (safetensors in ``weights_dir``: CPU, one host), ``nccl`` (a
    process group from the trainer's rank-0 GPU to every vLLM worker), ``gloo`` (the same group on CPU); ``auto``:
    ``nccl`` for vLLM servers when the trainer runs on CUDA, else ``file``. Our HF server always takes files."""
    weight_group_host: str = "127.0.0.1"
    """Address of the trainer's rank-0 machine that the vLLM workers reach for the weight group (nccl/gloo)."""
    max_staleness: int = 0
    """Most policy versions a trained token may lag the trainer (0: synchronous; admission control enforces it)."""
    server_threads: int = 1
    """torch threads of each local server (0: torch's default)."""
    server_batch_size: int = 64
    """Most rows a local server decodes together."""
    workers: int = 256
    """Trajectory threads of the trainer (each waits on a server or a search most of the time)."""
    request_timeout: float = 300.0
    """Seconds one completion may take before its server counts as hung."""
    weights_dir: str | None = None
    """Where pushed weights are written for the servers to load (default ``/dev/shm``: shared memory)."""
    log_dir: str | None = None
    """Folder of the local servers' logs (default: the trainer's ``default_root_dir``)."""
    trainer_threads: int | None = None
    """torch threads of a CPU trainer process; None: the cores left after the local servers' threads (at least 1),
    so trainer and servers do not oversubscribe the cores (OpenMP barriers spin badly when they do)."""

    def __post_init__(self) -> None:
        if isinstance(self.servers, int) and self.servers < 1:
            raise ValueError(f"async_rollout.servers must be >= 1 or a list of URLs, got {self.servers}")
        if isinstance(self.servers, list) and not self.servers:
            raise ValueError("async_rollout.servers is an empty URL list")
        if self.max_staleness < 0:
            raise ValueError(f"async_rollout.max_staleness must be >= 0, got {self.max_staleness}")
        if self.server_kind not in SERVER_KINDS:
            raise ValueError(f"async_rollout.server_kind must be one of {SERVER_KINDS}, got {self.server_kind!r}")
        if self.weight_transport not in TRANSPORTS:
            raise ValueError(
                f"async_rollout.weight_transport must be one of {TRANSPORTS}, got {self.weight_transport!r}"
            )
        if self.server_kind == "hf" and self.weight_transport not in ("auto", "file"):
            raise ValueError(
                "async_rollout.weight_transport nccl/gloo needs server_kind: vllm (our HF server loads files)"
            )


@dataclass
class _Tally:
    push_seconds: list[float] = field(default_factory=list)
    buffer_depth: list[int] = field(default_factory=list)
    server_start: list[dict[str, float]] = field(default_factory=list)
    server_last: list[dict[str, float]] = field(default_factory=list)
    wall_start: float = field(default_factory=time.perf_counter)
    cpu_start: float = field(default_factory=time.process_time)
    last_take: float = field(default_factory=time.perf_counter)


class AsyncTrainerRollout:
    """Servers + driver + weight pushes for one training run, on every trainer rank.

    Several ranks share the servers: each rank drives its own share of the prompts (its data-parallel batch), all
    ranks join the weight gather (FSDP2) and rank 0 writes and pushes; the ranks agree on success before any of them
    admits the new version (``lockstep``), so a failure stops every rank with the same message.

    Args:
        cfg: the async settings.
        engine: the training rollout engine (its settings, protocol and retriever drive the trajectories).
        servers: the client of the rollout servers (the same URLs on every rank).
        processes: the local server processes this rank started (rank 0), else None.
        prompts: ``prompts(k)`` → this rank's ``(example, prompt string)`` pairs of batch ``k``.
        n: samples per prompt.
        total_batches: batches the run trains (admission stops there), None if unknown.
        first_batch: the batch trained next (the rollout step; later than 0 after a resume).
        policy: the policy whose weights the servers start from (pushed as version ``first_batch``).
        seed: base sampling seed of this rank.
        rank: this trainer rank (0 pushes the weights).
        lockstep: the rank agreement with several ranks, else None.
        restore: the driver's snapshot from the checkpoint being resumed, or None.
        sender: rank 0's end of the weight group with vLLM servers (nccl/gloo transport), else None (files).
    """

    def __init__(
        self,
        cfg: AsyncRolloutConfig,
        engine: RolloutEngine,
        servers: RemoteServers,
        processes: ServerProcesses | None,
        prompts,
        n: int,
        total_batches: int | None,
        first_batch: int,
        policy: torch.nn.Module,
        seed: int,
        rank: int = 0,
        lockstep: Lockstep | None = None,
        restore: dict | None = None,
        sender: GroupWeightSender | None = None,
    ) -> None:
        self.cfg, self.engine, self.servers, self.processes = cfg, engine, servers, processes
        self.sender = sender
        self.rank, self.lockstep = rank, lockstep
        base = Path(cfg.weights_dir or ("/dev/shm" if Path("/dev/shm").is_dir() else tempfile.gettempdir()))
        self._weights_dir = Path(tempfile.mkdtemp(prefix=f"searchr1-weights-{os.getpid()}-", dir=base))
        atexit.register(shutil.rmtree, self._weights_dir, ignore_errors=True)  # also after a crash
        self.tally = _Tally()
        self.push(policy, first_batch)
        self.tally.server_start = self.tally.server_last = self.servers.counters()
        check = self.processes.check_alive if self.processes is not None else None
        self.driver = AsyncRolloutDriver(
            engine, servers, prompts, n, total_batches, cfg.max_staleness, seed, cfg.workers, first_batch, check,
            restore,
        )  # fmt: skip
        self.driver.set_version(first_batch)

    def take(self, step: int, examples: list | None = None) -> RolloutBatch:
        """The finished groups of batch ``step`` as a training batch (waits for them); ``examples``: the trainer's
        own batch, checked to be the one the groups were sampled for."""
        groups, message = [], None
        try:
            groups = self.driver.take(step)
            if examples is not None:
                check_same_examples(groups, examples)
        except RuntimeError as err:  # a server error, or the streams out of step
            message = f"{type(err).__name__}: {err}"
            if self.lockstep is None:
                raise
        if self.lockstep is not None:
            self.lockstep.raise_together(message, RuntimeError)
        self.tally.buffer_depth.append(self.driver.finished_waiting())
        self.driver.record_trained(groups, step)
        batch = groups_to_batch(groups, self.engine.pad_token_id)
        batch.generation_seconds = time.perf_counter() - self.tally.last_take
        self.tally.last_take = time.perf_counter()
        return batch

    def push(self, policy: torch.nn.Module, version: int) -> float:
        """Write the policy's weights to shared memory and have every server load them as ``version`` (every rank
        calls it: the gather is a collective under FSDP2; rank 0 writes and pushes). A LoRA policy pushes its merged
        weights (:func:`pushed_state`; the servers start from the base model)."""
        start = time.perf_counter()
        state = pushed_state(policy)
        message = None
        if self.rank == 0:
            try:
                if self.sender is not None:
                    self.servers.push_group(self.sender, state.items(), version)
                else:
                    self.servers.push_weights(self._write(state, version), version)
            except RolloutServerError as err:
                message = str(err)
        if self.lockstep is not None:  # every rank admits the new version only once the servers hold it
            self.lockstep.raise_together(message, RolloutServerError)
        elif message is not None:
            raise RolloutServerError(message)
        self.servers.version = version
        if hasattr(self, "driver"):
            self.driver.set_version(version)
        seconds = time.perf_counter() - start
        self.tally.push_seconds.append(seconds)
        return seconds

    def _write(self, state: dict[str, torch.Tensor], version: int) -> str:
        """Write ``state`` where the servers read it (``torch.save`` for ours, safetensors for vLLM); the path."""
        safetensors = getattr(self.servers, "weights_format", "torch") == "safetensors"
        path = self._weights_dir / f"policy-{version % 2}.{'safetensors' if safetensors else 'pt'}"
        tmp = path.with_suffix(".tmp")
        if safetensors:
            save_unshared(list(state.items()), str(tmp))
        else:
            torch.save(state, tmp)
        os.replace(tmp, path)
        return str(path)

    def step_metrics(self, rollout: RolloutBatch, version: int) -> dict[str, float]:
        """This step's ``async/*`` metrics: staleness of its tokens, idle shares, buffer depth, push time."""
        out: dict[str, float] = {}
        if rollout.token_versions is not None:
            sampled = rollout.token_versions[rollout.token_versions >= 0]
            lag = (version - sampled).float()
            out["async/staleness_token_mean"] = float(lag.mean()) if lag.numel() else 0.0
            out["async/staleness_token_max"] = float(lag.max()) if lag.numel() else 0.0
            for s in range(self.cfg.max_staleness + 1):  # the per-token histogram, one share per staleness
                out[f"async/staleness_token_share_{s}"] = float((lag == s).float().mean()) if lag.numel() else 0.0
        counters = self.servers.counters()
        out.update(server_shares(self.tally.server_last, counters))
        self.tally.server_last = counters
        wall = time.perf_counter() - self.tally.wall_start
        out["async/trainer_idle_share"] = self.driver.stats.trainer_wait_seconds / max(wall, 1e-9)
        out["async/buffer_depth"] = float(self.tally.buffer_depth[-1]) if self.tally.buffer_depth else 0.0
        out["async/weight_push_seconds"] = self.tally.push_seconds[-1] if self.tally.push_seconds else 0.0
        return out

    def summary(self) -> dict[str, Any]:
        """The ``async`` object of ``summary.json``, over every trainer rank: with several ranks every rank must call
        it (two collectives): group counts and staleness histograms are summed, ``max_staleness_seen`` is the
        maximum, the trainer idle share and buffer depth are the ranks' means (the server figures are shared)."""
        stats, tally = self.driver.stats, self.tally
        wall = time.perf_counter() - tally.wall_start
        merged = merge_ranks(
            self.lockstep,
            [stats.admitted_groups, stats.trained_groups, stats.restored_groups],
            [stats.token_staleness, stats.group_staleness],
            [stats.trainer_wait_seconds / max(wall, 1e-9), sum(tally.buffer_depth) / max(len(tally.buffer_depth), 1)],
        )
        (admitted, trained, restored), (tokens, groups), (idle, depth) = merged
        servers = server_shares(tally.server_start, tally.server_last)
        return {
            "max_staleness": self.cfg.max_staleness,
            "max_staleness_seen": max([*tokens, *groups], default=0),
            # started but not trained (at the end of a run: never will be); admission stops at the last batch
            "dropped_groups": admitted - trained,
            "trained_groups": trained,
            "admitted_groups": admitted,
            "restored_groups": restored,
            "staleness_tokens": {str(k): v for k, v in sorted(tokens.items())},
            "staleness_groups": {str(k): v for k, v in sorted(groups.items())},
            "trainer_idle_share": round(idle, 4),
            "server_idle_share": round(servers.get("async/server_idle_share", 0.0), 4),
            "server_tokens_per_second": round(servers.get("async/server_tokens_per_second", 0.0), 1),
            # CPU seconds per wall second (1.0 = one core busy): which side is CPU-bound, whatever the load
            "trainer_cpu_share": round((time.process_time() - tally.cpu_start) / max(wall, 1e-9), 4),
            "server_cpu_share": round(servers.get("async/server_cpu_share", 0.0), 4),
            "buffer_depth_mean": round(depth, 3),
            "weight_push_seconds_mean": round(sum(tally.push_seconds) / max(len(tally.push_seconds), 1), 4),
            "servers": self.servers.urls,
        }

    def close(self) -> int:
        """Stop the driver and the local servers (idempotent); returns the groups started but never trained."""
        dropped = self.driver.close() if hasattr(self, "driver") else 0
        if self.processes is not None:
            self.processes.close()
        shutil.rmtree(self._weights_dir, ignore_errors=True)
        return dropped


def pushed_state(policy: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights a push sends (a collective under FSDP2; other ranks get ``{}``): the policy's full state dict, or
    for a LoRA policy its merged weights ``W + (alpha / r) · B A`` under the base model's names (the servers run the
    plain base model), built while the gathered state is drained (:func:`~searchr1.models.lora.merged_state`)."""
    state = full_state_dict(policy)
    return merged_state(state, lora_scaling(policy)) if is_lora(policy) else state


def start_async_rollout(module: Any) -> AsyncTrainerRollout:
    """Build the async side of ``module`` (a ``SearchR1Module`` inside ``fit``; every rank calls it): rank 0 starts
    the local servers and shares their URLs, each rank gets its prompt stream and driver."""
    from searchr1.protocols import get_protocol

    trainer, cfg = module.trainer, module.async_config
    stream = getattr(getattr(trainer, "datamodule", None), "train_stream", None)
    if stream is None:
        raise ValueError("async_rollout needs the QADataModule's resumable train stream (data: QADataModule)")
    first = module._rollout_steps
    origin = stream.epoch * stream.batches_per_epoch + stream.batches_consumed  # the stream position of batch first
    engine = module.engine(True)
    protocol = get_protocol(engine.config.protocol)
    use_chat = module.hparams.use_chat_template

    def prompts(k: int) -> list[tuple[Any, str]]:
        epoch, step = divmod(origin + k - first, stream.batches_per_epoch)
        examples = stream.batch_at(epoch, step)  # this rank's share of the global batch
        return [(ex, protocol.build_prompt(ex.question, module.tokenizer, use_chat)) for ex in examples]

    if cfg.server_kind == "vllm":  # the servers record raw_logprobs: exact behaviour log-probs at temperature 1
        problem = behaviour_logprob_problem("raw_logprobs", engine._sampling_params(1, None, 0))
        if problem is not None:
            raise ValueError(f"async_rollout.server_kind vllm (servers run --logprobs-mode raw_logprobs): {problem}")
    processes, urls = None, cfg.servers
    if isinstance(cfg.servers, int):
        _share_cores(cfg, trainer)
        if trainer.global_rank == 0:
            processes = start_servers(cfg, module.hparams.model_name_or_path, cfg.log_dir or trainer.default_root_dir,
                                       module.hparams.seed)  # fmt: skip
        urls = trainer.strategy.broadcast(processes.urls if processes is not None else None, src=0)
    client = VLLMRemoteServers if cfg.server_kind == "vllm" else RemoteServers
    servers = client(list(urls), cfg.request_timeout)
    sender = join_weight_group(cfg, module, servers)
    return AsyncTrainerRollout(
        cfg,
        engine,
        servers,
        processes,
        prompts,
        module.algorithm.n_samples,
        total_batches(trainer),
        first,
        module.policy,
        module.hparams.seed + 104_729 * trainer.global_rank,
        trainer.global_rank,
        module.lockstep,
        module._async_restore,
        sender,
    )


def _share_cores(cfg: AsyncRolloutConfig, trainer: Any) -> None:
    """On CPU, leave the local servers their threads: the trainer ranks of this machine take the other cores."""
    if type(trainer.accelerator).__name__ != "CPUAccelerator":
        return
    threads = cfg.trainer_threads
    if threads is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        server_threads = cfg.server_threads or 1
        threads = max(1, (cores - cfg.servers * server_threads) // max(trainer.num_devices, 1))
    torch.set_num_threads(threads)


def total_batches(trainer: Any) -> int | None:
    """Rollout steps of the whole run (``num_training_batches × max_epochs``, capped by ``max_steps``), if finite."""
    per_epoch, epochs = trainer.num_training_batches, trainer.max_epochs
    total = None
    if per_epoch != float("inf") and epochs is not None and epochs > 0:
        total = int(per_epoch) * int(epochs)
    if trainer.max_steps is not None and trainer.max_steps > 0:
        total = trainer.max_steps if total is None else min(total, trainer.max_steps)
    return total


def check_same_examples(groups: list[Group], batch: list) -> None:
    """Stop when the trainer's batch is not the one the groups were sampled for (the two streams diverged)."""
    got = [getattr(g.example, "question", g.example) for g in groups]
    want = [getattr(ex, "question", ex) for ex in batch]
    if got != want:
        raise RuntimeError(
            f"async rollout out of step with the data loader: sampled {got[:2]}… but the step's batch is {want[:2]}…; "
            "the async path needs the QADataModule's own train stream (no custom sampler or dataloader)"
        )
