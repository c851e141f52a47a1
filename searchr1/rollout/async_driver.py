"""Asynchronous rollouts: trajectories run on rollout servers continuously, ahead of the trainer, staleness bounded.

The trainer trains step ``k`` with policy version ``k`` (the weights after ``k`` updates) on the groups of prompt
batch ``k``, in order. **Admission control** bounds staleness without dropping anything: the groups of batch ``k``
start only once the servers hold version ``>= k - max_staleness``, so every token they sample has a version ``v``
with ``k - v <= max_staleness`` (servers only move forward), and a group that starts is always trained — FIFO by
batch, whole (GRPO groups stay together), exactly once. With ``max_staleness = 0`` batch ``k`` starts only after
version ``k`` is loaded: synchronous training.

Each trajectory is its own task on a thread pool: it sends one completion per turn to the least busy server (the
whole context as token ids: the servers' prefix caches make that cheap), appends the turn with its per-token
versions and behaviour log-probs (:meth:`RolloutEngine._take_turn`; masks set at append), and runs its search on
its own thread, so searches never block decoding and a slow search delays only its own trajectory. A weight
update lands on the servers between two tokens; a turn that spans it carries both versions, and a search in flight
is not repeated (it runs on the trainer side, untouched by the update).

Departure from AReaL/verl: no sample is ever discarded for being stale (TRL's async GRPO and prime-rl drop them).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from searchr1.retrieval import RetrievalError
from searchr1.rollout.engine import RolloutEngine
from searchr1.rollout.remote import RemoteServers
from searchr1.rollout.types import RolloutBatch, Trajectory

SEED_MOD = 2**62


@dataclass
class Group:
    """The ``n`` trajectories of one prompt, started together and trained together.

    Attributes:
        batch: the prompt batch (= training step) it belongs to.
        position: its index in that batch.
        example: what the prompt came from (e.g. a ``QAExample``; opaque here).
        trajectories: the ``n`` samples.
        admit_version: the policy version the servers held when the group started.
        finished: trajectories done so far.
        pending: the query of each trajectory (by index) whose search is running.
        lock: held while a trajectory of the group changes (a snapshot sees whole turns).
    """

    batch: int
    position: int
    example: Any
    trajectories: list[Trajectory]
    admit_version: int
    finished: int = 0
    pending: dict[int, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def done(self) -> bool:
        return self.finished == len(self.trajectories)


@dataclass
class DriverStats:
    """Counters of the driver (cumulative)."""

    admitted_groups: int = 0
    trained_groups: int = 0
    restored_groups: int = 0
    """Groups continued from a checkpoint's snapshot (counted in ``admitted_groups`` too)."""
    trainer_wait_seconds: float = 0.0
    token_staleness: dict[int, int] = field(default_factory=dict)
    """Policy tokens trained, by staleness (training version minus sampling version)."""
    group_staleness: dict[int, int] = field(default_factory=dict)
    """Groups trained, by staleness (training version minus admission version)."""


class AsyncRolloutDriver:
    """Runs groups on rollout servers ahead of the trainer (see the module docstring).

    Args:
        engine: the rollout engine whose turn/search logic and settings are used (its backend is not).
        servers: the rollout servers' client.
        prompts: ``prompts(k)`` → the ``(example, prompt string)`` pairs of batch ``k``.
        n: samples per prompt (the group size).
        total_batches: batches the run will train; none beyond it starts (None: unbounded).
        max_staleness: most versions a trained token may lag the trainer.
        seed: base seed (batch ``k``'s sample ``j`` of prompt ``i`` uses its own derived seed per turn).
        workers: trajectory threads (each waits on a server or a search most of the time).
        first_batch: the batch the trainer trains next (a resumed run starts later).
        check: called while the trainer waits (e.g. raises when a server process died).
        restore: a :meth:`snapshot` from a checkpoint: its groups (finished or in flight, with their pending
            searches) continue where they were instead of being sampled again.
    """

    def __init__(
        self,
        engine: RolloutEngine,
        servers: RemoteServers,
        prompts: Callable[[int], list[tuple[Any, str]]],
        n: int,
        total_batches: int | None,
        max_staleness: int,
        seed: int = 0,
        workers: int = 256,
        first_batch: int = 0,
        check: Callable[[], None] | None = None,
        restore: dict | None = None,
    ) -> None:
        if max_staleness < 0:
            raise ValueError(f"max_staleness must be >= 0, got {max_staleness}")
        self.engine, self.servers, self.prompts, self.n = engine, servers, prompts, n
        self.total_batches, self.max_staleness, self.seed = total_batches, max_staleness, seed
        self.check = check or (lambda: None)
        self.stats = DriverStats()
        self._groups: dict[int, list[Group]] = {}
        self._next_batch = first_batch
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._closed = False
        # daemon threads, at most ``workers`` running: a crashed trainer exits without draining queued trajectories
        self._slots = threading.Semaphore(workers)
        if restore is not None:
            self._restore(restore)
        self._admitter = threading.Thread(target=self._admit_loop, name="admission", daemon=True)
        self._admitter.start()

    # ------------------------------------------------------------------ trainer side
    def set_version(self, version: int) -> None:
        """The servers now hold ``version`` (call after the weight push): admission may open."""
        with self._cond:
            self.servers.version = version
            self._cond.notify_all()

    def take(self, batch: int, poll_seconds: float = 0.2) -> list[Group]:
        """Wait for every group of ``batch`` to finish and hand them over (each group exactly once)."""
        start = time.perf_counter()
        with self._cond:
            while True:
                self._raise_error()
                groups = self._groups.get(batch)
                if groups is not None and all(g.done for g in groups):
                    break
                if batch >= self._next_batch and not self._admissible(batch):
                    raise RuntimeError(
                        f"batch {batch} is not admitted at server version {self.servers.version} with "
                        f"max_staleness={self.max_staleness}: push the weights of step {batch - self.max_staleness} "
                        "first (the trainer must take batches in order)"
                    )
                self._cond.wait(poll_seconds)
                self._cond.release()
                try:
                    self.check()
                finally:
                    self._cond.acquire()
            del self._groups[batch]
        self.stats.trainer_wait_seconds += time.perf_counter() - start
        self.stats.trained_groups += len(groups)
        return groups

    def finished_waiting(self) -> int:
        """Finished groups not yet taken (the buffer depth)."""
        with self._cond:
            return sum(g.done for groups in self._groups.values() for g in groups)

    def in_flight(self) -> int:
        """Admitted groups not finished yet."""
        with self._cond:
            return sum(not g.done for groups in self._groups.values() for g in groups)

    def close(self) -> int:
        """Stop admitting, abandon running trajectories; returns the admitted groups never taken (dropped)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            dropped = sum(len(groups) for groups in self._groups.values())
        return dropped

    def record_trained(self, groups: list[Group], version: int) -> None:
        """Add the staleness of ``groups`` trained at ``version`` to the histograms."""
        for group in groups:
            lag = version - group.admit_version
            self.stats.group_staleness[lag] = self.stats.group_staleness.get(lag, 0) + 1
            for traj in group.trajectories:
                for v in traj.versions:
                    if v >= 0:
                        self.stats.token_staleness[version - v] = self.stats.token_staleness.get(version - v, 0) + 1

    # ------------------------------------------------------------------ rollout side
    def _admissible(self, batch: int) -> bool:
        limit = self.total_batches is None or batch < self.total_batches
        return limit and batch - self.servers.version <= self.max_staleness

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _admit_loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._admissible(self._next_batch):
                    self._cond.wait()
                if self._closed:
                    return
                batch, self._next_batch = self._next_batch, self._next_batch + 1
                version = self.servers.version
            try:
                groups = self._start_batch(batch, version)
            except BaseException as err:  # the trainer sees it at its next take
                with self._cond:
                    self._error = err
                    self._cond.notify_all()
                return
            with self._cond:
                self._groups[batch] = groups
                self.stats.admitted_groups += len(groups)
            if not self._launch(groups):
                return

    def _launch(self, groups: list[Group]) -> bool:
        """Run every unfinished trajectory of ``groups`` (from its current state); False once closed."""
        for group in groups:
            for j, traj in enumerate(group.trajectories):
                if traj.done:
                    continue
                if self._closed:
                    return False
                seed = (self.seed + 1_000_003 * group.batch + 7919 * (group.position * self.n + j)) % SEED_MOD
                threading.Thread(target=self._run_slot, args=(group, j, seed), name="trajectory", daemon=True).start()
        return True

    def _run_slot(self, group: Group, index: int, seed: int) -> None:
        with self._slots:
            if not self._closed:
                self._run_trajectory(group, index, seed)

    # ------------------------------------------------------------------ checkpoint
    def snapshot(self) -> dict:
        """The admitted, untrained groups (plain types: trajectories, pending searches, versions) and the next
        batch to admit, for a checkpoint; a trajectory is captured between two of its turns or searches."""
        with self._cond:
            batches = {k: list(groups) for k, groups in self._groups.items()}
            next_batch = self._next_batch
        groups = []
        for batch, items in sorted(batches.items()):
            for g in items:
                with g.lock:
                    trajs = [dataclasses.asdict(t) for t in g.trajectories]
                    groups.append({"batch": batch, "position": g.position, "admit_version": g.admit_version,
                                   "trajectories": trajs, "pending": dict(g.pending)})  # fmt: skip
        return {"next_batch": next_batch, "groups": groups}

    def _restore(self, state: dict) -> None:
        """Put a snapshot's groups back (examples re-read from ``prompts``) and continue their trajectories."""
        restored: dict[int, list[Group]] = {}
        examples: dict[int, list[tuple[Any, str]]] = {}
        for item in state["groups"]:
            batch, position = int(item["batch"]), int(item["position"])
            if batch not in examples:
                examples[batch], restored[batch] = self.prompts(batch), []
            trajs = [_trajectory_from_dict(t) for t in item["trajectories"]]
            for t in trajs:  # captured between its last turn and the decode of its text
                if t.done and not t.response_text:
                    t.response_text = self.engine.tokenizer.decode(t.response_ids, skip_special_tokens=False)
            pending = {int(k): str(v) for k, v in item["pending"].items()}
            finished = sum(t.done for t in trajs)
            example = examples[batch][position][0]
            group = Group(batch, position, example, trajs, int(item["admit_version"]), finished, pending)
            restored[batch].append(group)
        self._groups.update(restored)
        # not the snapshot's next_batch: a batch counted there may not have had its groups yet
        self._next_batch = max([self._next_batch, *(k + 1 for k in restored)])
        self.stats.admitted_groups += sum(len(g) for g in restored.values())
        self.stats.restored_groups += sum(len(g) for g in restored.values())
        for groups in restored.values():
            self._launch(groups)

    def _start_batch(self, batch: int, version: int) -> list[Group]:
        items = self.prompts(batch)
        prompts = [prompt for _, prompt in items]
        trajs = self.engine._init_trajectories(prompts, self.n)
        return [
            Group(batch, i, example, trajs[i * self.n : (i + 1) * self.n], version)
            for i, (example, _) in enumerate(items)
        ]

    def _run_trajectory(self, group: Group, index: int, seed: int) -> None:
        """The remaining turns of one trajectory: a completion per turn on a server, its searches on this thread
        (a search that was pending in a restored snapshot runs first)."""
        engine, cfg = self.engine, self.engine.config
        traj = group.trajectories[index]
        try:
            if index in group.pending:
                self._search(group, index, group.pending[index])
            while not traj.done and not self._closed:
                room = min(cfg.max_response_tokens, cfg.max_total_tokens - traj.total_tokens)
                params = engine._sampling_params(room, seed, traj.num_turns)
                params.seed = None if params.seed is None else params.seed % SEED_MOD
                out = self.servers.complete(traj.prompt_ids + traj.response_ids, params)
                with group.lock:
                    action = engine._take_turn(traj, out, final=traj.num_turns >= cfg.max_turns)
                    if action is not None and action.kind == "search":
                        group.pending[index] = action.content
                if index in group.pending:
                    self._search(group, index, group.pending[index])
            if self._closed:
                return
            traj.response_text = engine.tokenizer.decode(traj.response_ids, skip_special_tokens=False)
        except BaseException as err:
            with self._cond:
                self._error = self._error or err
                self._cond.notify_all()
            return
        with self._cond:
            group.finished += 1
            if group.done:
                self._cond.notify_all()

    def _search(self, group: Group, index: int, query: str) -> None:
        """Run one trajectory's search (outside the group lock) and append its observation (inside)."""
        engine = self.engine
        results, error = None, None
        try:
            results = engine.retriever.search([query], engine.config.topk)
            if len(results) != 1:
                raise RuntimeError(f"retriever returned {len(results)} result lists for 1 query")
        except RetrievalError as err:
            error = err
        with group.lock:
            engine._apply_searches([(group.trajectories[index], query)], results, error)
            del group.pending[index]


def _trajectory_from_dict(data: dict) -> Trajectory:
    """A :class:`Trajectory` from ``dataclasses.asdict`` output (chunks back to tuples)."""
    data = dict(data)
    data["chunks"] = [tuple(c) for c in data["chunks"]]
    return Trajectory(**data)


def groups_to_batch(groups: list[Group], pad_token_id: int) -> RolloutBatch:
    """The training batch of ``groups`` (rows grouped; group id and prompt index = position in the batch)."""
    trajs = []
    for group in groups:
        for traj in group.trajectories:
            traj.group_id = traj.prompt_index = group.position
            trajs.append(traj)
    return RolloutBatch.from_trajectories(trajs, pad_token_id)
