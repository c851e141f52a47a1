"""The trainer's end of asynchronous training: servers, the driver, weight pushes, metrics (docs/async.md).

``SearchR1Module(async_rollout=AsyncRolloutConfig(...))`` takes each step's rollout from
:class:`~searchr1.rollout.async_driver.AsyncRolloutDriver` instead of generating it in-process, and pushes its
weights to the rollout servers after each update. The loss needs nothing new: the behaviour log-probs the servers
recorded are the batch's ``rollout_logprobs``, the proximal policy is the trainer's weights at the start of the update
(the "old" log-probs, or the detached current ones with a single update), and ``algorithm.rollout_correction``
turns ``π_prox / π_behav`` into per-token importance weights — AReaL's decoupled PPO objective.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from searchr1.rollout import RolloutBatch, RolloutEngine
from searchr1.rollout.async_driver import AsyncRolloutDriver, Group, groups_to_batch
from searchr1.rollout.remote import RemoteServers, ServerProcesses


@dataclass
class AsyncRolloutConfig:
    """Knobs of asynchronous, disaggregated training (``model.async_rollout`` in a config)."""

    servers: int | list[str] = 1
    """How many local rollout server processes ``fit`` starts (on this machine's spare cores), or the URLs of running
    servers (``http://host:port``: ours, or ``vllm serve`` with the weight-update extension)."""
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

    def __post_init__(self) -> None:
        if isinstance(self.servers, int) and self.servers < 1:
            raise ValueError(f"async_rollout.servers must be >= 1 or a list of URLs, got {self.servers}")
        if isinstance(self.servers, list) and not self.servers:
            raise ValueError("async_rollout.servers is an empty URL list")
        if self.max_staleness < 0:
            raise ValueError(f"async_rollout.max_staleness must be >= 0, got {self.max_staleness}")


@dataclass
class _Tally:
    push_seconds: list[float] = field(default_factory=list)
    buffer_depth: list[int] = field(default_factory=list)
    server_start: list[dict[str, float]] = field(default_factory=list)
    server_last: list[dict[str, float]] = field(default_factory=list)
    wall_start: float = field(default_factory=time.perf_counter)
    last_take: float = field(default_factory=time.perf_counter)


class AsyncTrainerRollout:
    """Servers + driver + weight pushes for one training run (single trainer rank).

    Args:
        cfg: the async settings.
        engine: the training rollout engine (its settings, protocol and retriever drive the trajectories).
        prompts: ``prompts(k)`` → ``(example, prompt string)`` pairs of batch ``k``.
        n: samples per prompt.
        total_batches: batches the run trains (admission stops there), None if unknown.
        first_batch: the batch trained next (the rollout step; later than 0 after a resume).
        policy: the policy whose weights the servers start from (pushed as version ``first_batch``).
        model_path: a folder with the policy's architecture and tokenizer (the servers load it, then the push).
        seed: base sampling seed.
        log_dir: default folder of the server logs.
    """

    def __init__(
        self,
        cfg: AsyncRolloutConfig,
        engine: RolloutEngine,
        prompts,
        n: int,
        total_batches: int | None,
        first_batch: int,
        policy: torch.nn.Module,
        model_path: str,
        seed: int,
        log_dir: str,
    ) -> None:
        self.cfg, self.engine = cfg, engine
        self.processes: ServerProcesses | None = None
        if isinstance(cfg.servers, int):
            self.processes = ServerProcesses(
                cfg.servers, model_path, cfg.log_dir or log_dir, cfg.server_threads, cfg.server_batch_size
            )
            urls = self.processes.urls
        else:
            urls = list(cfg.servers)
        self.servers = RemoteServers(urls, cfg.request_timeout)
        base = Path(cfg.weights_dir or ("/dev/shm" if Path("/dev/shm").is_dir() else tempfile.gettempdir()))
        self._weights_dir = Path(tempfile.mkdtemp(prefix=f"searchr1-weights-{os.getpid()}-", dir=base))
        self.tally = _Tally()
        self.push(policy, first_batch)
        self.tally.server_start = self.tally.server_last = self.servers.counters()
        check = self.processes.check_alive if self.processes is not None else None
        self.driver = AsyncRolloutDriver(
            engine, self.servers, prompts, n, total_batches, cfg.max_staleness, seed, cfg.workers, first_batch, check
        )
        self.driver.set_version(first_batch)

    def take(self, step: int, examples: list | None = None) -> RolloutBatch:
        """The finished groups of batch ``step`` as a training batch (waits for them); ``examples``: the trainer's
        own batch, checked to be the one the groups were sampled for."""
        groups = self.driver.take(step)
        if examples is not None:
            check_same_examples(groups, examples)
        self.tally.buffer_depth.append(self.driver.finished_waiting())
        self.driver.record_trained(groups, step)
        batch = groups_to_batch(groups, self.engine.pad_token_id)
        batch.generation_seconds = time.perf_counter() - self.tally.last_take
        self.tally.last_take = time.perf_counter()
        return batch

    def push(self, policy: torch.nn.Module, version: int) -> float:
        """Write the policy's weights to shared memory and have every server load them as ``version``."""
        start = time.perf_counter()
        state = {k: v.detach().to("cpu", copy=True) for k, v in policy.state_dict().items()}
        path = self._weights_dir / f"policy-{version % 2}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        self.servers.push_weights(str(path), version)
        if hasattr(self, "driver"):
            self.driver.set_version(version)
        seconds = time.perf_counter() - start
        self.tally.push_seconds.append(seconds)
        return seconds

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
        out.update(_server_shares(self.tally.server_last, counters))
        self.tally.server_last = counters
        wall = time.perf_counter() - self.tally.wall_start
        out["async/trainer_idle_share"] = self.driver.stats.trainer_wait_seconds / max(wall, 1e-9)
        out["async/buffer_depth"] = float(self.tally.buffer_depth[-1]) if self.tally.buffer_depth else 0.0
        out["async/weight_push_seconds"] = self.tally.push_seconds[-1] if self.tally.push_seconds else 0.0
        return out

    def summary(self) -> dict[str, Any]:
        """The ``async`` object of ``summary.json``."""
        stats, tally = self.driver.stats, self.tally
        seen = max([*stats.token_staleness, *stats.group_staleness], default=0)
        wall = time.perf_counter() - tally.wall_start
        servers = _server_shares(tally.server_start, tally.server_last)
        return {
            "max_staleness": self.cfg.max_staleness,
            "max_staleness_seen": seen,
            # started but not trained (at the end of a run: never will be); admission stops at the last batch
            "dropped_groups": stats.admitted_groups - stats.trained_groups,
            "trained_groups": stats.trained_groups,
            "admitted_groups": stats.admitted_groups,
            "staleness_tokens": {str(k): v for k, v in sorted(stats.token_staleness.items())},
            "staleness_groups": {str(k): v for k, v in sorted(stats.group_staleness.items())},
            "trainer_idle_share": round(stats.trainer_wait_seconds / max(wall, 1e-9), 4),
            "server_idle_share": round(servers.get("async/server_idle_share", 0.0), 4),
            "server_tokens_per_second": round(servers.get("async/server_tokens_per_second", 0.0), 1),
            "buffer_depth_mean": round(sum(tally.buffer_depth) / max(len(tally.buffer_depth), 1), 3),
            "weight_push_seconds_mean": round(sum(tally.push_seconds) / max(len(tally.push_seconds), 1), 4),
            "servers": self.servers.urls,
        }

    def close(self) -> int:
        """Stop the driver and the local servers (idempotent); returns the groups started but never trained."""
        dropped = self.driver.close() if hasattr(self, "driver") else 0
        if self.processes is not None:
            self.processes.close()
        if self._weights_dir.exists():
            for path in self._weights_dir.glob("*"):
                path.unlink(missing_ok=True)
            self._weights_dir.rmdir()
        return dropped


def _server_shares(before: list[dict[str, float]], after: list[dict[str, float]]) -> dict[str, float]:
    """Idle share and tokens per second of the servers between two ``/metrics`` reads (summed over servers)."""

    def delta(name: str) -> float:
        return sum(a.get(name, 0.0) - b.get(name, 0.0) for a, b in zip(after, before))

    wall, busy = delta("searchr1_rollout_wall_seconds_total"), delta("searchr1_rollout_busy_seconds_total")
    tokens = delta("searchr1_rollout_tokens_total")
    return {
        "async/server_idle_share": 1.0 - busy / wall if wall > 0 else 0.0,
        "async/server_tokens_per_second": tokens / (wall / max(len(after), 1)) if wall > 0 else 0.0,
    }


def start_async_rollout(module: Any) -> AsyncTrainerRollout:
    """Build the async side of ``module`` (a ``SearchR1Module`` inside ``fit``): servers, prompt stream, driver."""
    from searchr1.protocols import get_protocol

    trainer = module.trainer
    if trainer.world_size > 1:
        raise NotImplementedError(
            "async_rollout with several trainer ranks is not supported yet; train on one rank (devices: 1) "
            "or drop model.async_rollout"
        )
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
        examples = stream.batch_at(epoch, step)
        return [(ex, protocol.build_prompt(ex.question, module.tokenizer, use_chat)) for ex in examples]

    return AsyncTrainerRollout(
        module.async_config,
        engine,
        prompts,
        module.algorithm.n_samples,
        total_batches(trainer),
        first,
        module.policy,
        module.hparams.model_name_or_path,
        module.hparams.seed,
        str(trainer.default_root_dir),
    )


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
