"""A Lightning callback that records when each training step ends (benchmarks compare throughput with it)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback


class StepClock(Callback):
    """Writes ``{"step_ends": [s, ...], "async": {...} | null, "retrieval_latencies": [...]}`` to ``path`` when
    training ends: seconds from the start of training to the end of each step, the module's ``async_summary()``
    and the per-query latencies of a :class:`~searchr1.testing.latency.StragglerRetriever`.

    Args:
        path: the JSON file to write.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.ends: list[float] = []
        self._t0 = 0.0

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.ends.append(time.perf_counter() - self._t0)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        summary = getattr(pl_module, "async_summary", lambda: None)()
        latencies = getattr(getattr(pl_module, "retriever", None), "latencies", [])
        record = {"step_ends": self.ends, "async": summary, "retrieval_latencies": list(latencies)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(record))


class TrainedPrompts(Callback):
    """Appends ``{"step", "questions"}`` to a JSONL file after every training step (flushed at once, so a run killed
    with SIGKILL leaves every step it finished): which prompts each rollout step trained.

    Args:
        path: the JSONL file (appended to, so a resumed run adds its steps).
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = getattr(pl_module, "_rollout_steps", batch_idx + 1) - 1
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, "questions": [getattr(ex, "question", str(ex)) for ex in batch]}) + "\n")
