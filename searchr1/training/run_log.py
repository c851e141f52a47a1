"""What a run keeps of its rollouts for later reading: the search log, sampled trajectories and the HTML report.

:class:`RunRecorder` (on in the embedded default) wraps the module's retriever in a
:class:`~searchr1.retrieval.search_log.SearchRecorder` and, after every training step, appends

* every search of the step's rollout to ``<default_root_dir>/search_log.parquet`` (rank ``r > 0``:
  ``search_log.rank<r>.parquet``; a resumed run a new ``search_log.resumed-<time>.parquet``);
  :class:`~searchr1.retrieval.ReplayRetriever` answers from it;
* ``samples_per_step`` trajectories (as many outcome classes as the step has, spread over the batch; rank 0) to
  ``<default_root_dir>/trajectories.jsonl``: decoded chunks with their kind (policy / observation / invalid, i.e.
  the loss mask), queries, retrieved titles, answer, score and outcome class (:mod:`searchr1.rewards.search_quality`);

and at the end of ``fit`` writes ``report.html`` (:mod:`searchr1.evaluation.html_report`) and prints its path.
Every row has a ``phase``: ``train``, or ``val`` for the searches of validation rollouts (step = the training
steps done before that validation, trajectory ``<step>/val<batch>/<row>``). Rank 0 also logs the client's per-call
retrieval metrics each step (``retrieval/latency_p50_ms``, ``latency_p99_ms``, ``qps``, ``failures``,
``cache_hit_rate``: :mod:`searchr1.retrieval.call_metrics`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from searchr1.evaluation.html_report import TRAJECTORIES_FILE, write_run_report
from searchr1.retrieval.search_log import SEARCH_LOG_FILE, SearchLog, SearchRecorder, search_records
from searchr1.rewards import score_trajectory
from searchr1.rewards.search_quality import OUTCOMES, assess, gold_titles
from searchr1.training.steps import StepOutput


def sample_rows(outcomes: Sequence[str], count: int) -> list[int]:
    """``count`` rows (ascending) that cover as many outcome classes as they can: the classes take turns in
    :data:`~searchr1.rewards.search_quality.OUTCOMES` order, each giving its rows spread evenly over the batch."""
    by_class = [[i for i, o in enumerate(outcomes) if o == name] for name in OUTCOMES]
    taken: list[list[int]] = [[] for _ in OUTCOMES]
    left = min(count, len(outcomes))
    while left:
        for c, rows in enumerate(by_class):
            if left and len(taken[c]) < len(rows):
                taken[c].append(-1)
                left -= 1
    out = []
    for rows, picks in zip(by_class, taken):
        n = len(picks)
        out += [rows[i * len(rows) // n] for i in range(n)]
    return sorted(out)


def search_log_name(rank: int, resumed: bool) -> str:
    """``search_log.parquet``; ``search_log.rank<r>.parquet`` on rank ``r > 0``; a resumed run writes a new file
    (``search_log.resumed-<time>.parquet``) instead of replacing the first part's."""
    name = SEARCH_LOG_FILE if rank == 0 else f"search_log.rank{rank}.parquet"
    return name.replace(".parquet", f".resumed-{time.strftime('%Y%m%d-%H%M%S')}.parquet") if resumed else name


def trajectory_outcome(traj: Any, example: Any, protocol: str) -> str:
    """The outcome class of one trajectory (:func:`~searchr1.rewards.search_quality.assess`)."""
    em = score_trajectory(traj, example.golden_answers).em
    return assess(traj, example.golden_answers, em > 0, gold_titles(example.metadata), protocol).outcome


def trajectory_row(traj: Any, example: Any, score: float, step: int, tid: str, tokenizer: Any, protocol: str) -> dict:
    """The ``trajectories.jsonl`` row of one trajectory (see the module docstring)."""
    em = score_trajectory(traj, example.golden_answers).em
    quality = assess(traj, example.golden_answers, em > 0, gold_titles(example.metadata), protocol)
    segments = [
        [kind, tokenizer.decode(traj.response_ids[s:e], skip_special_tokens=False)] for s, e, kind in traj.chunks
    ]
    return {
        "step": step,
        "trajectory": tid,
        "question": example.question,
        "golden_answers": list(example.golden_answers),
        "answer": traj.answer,
        "score": float(score),
        "em": em,
        "outcome": quality.outcome,
        "answer_in_retrieved": quality.answer_in_retrieved,
        "queries": list(traj.queries),
        "doc_ids": [list(d) for d in traj.doc_ids],
        "finish_reason": traj.finish_reason,
        "segments": segments,
    }


class RunRecorder(Callback):
    """Search log, sampled trajectories and the HTML report of a training run (see the module docstring).

    Args:
        samples_per_step: trajectories written to ``trajectories.jsonl`` per training step (0: none).
        search_log: write ``search_log.parquet``.
        report: write ``report.html`` at the end of fit and print its path.
    """

    def __init__(self, samples_per_step: int = 4, search_log: bool = True, report: bool = True) -> None:
        self.samples_per_step, self.search_log, self.report = samples_per_step, search_log, report
        self.recorder: SearchRecorder | None = None
        self._log: SearchLog | None = None
        self.report_path: Path | None = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        root = Path(trainer.default_root_dir)
        resumed = trainer.ckpt_path is not None
        if trainer.global_rank == 0 and not resumed:
            (root / TRAJECTORIES_FILE).unlink(missing_ok=True)  # a new run's samples only; a resumed run appends
        if not self.search_log or getattr(pl_module, "retriever", None) is None:
            return
        self.recorder = SearchRecorder(pl_module.retriever)
        pl_module.retriever = self.recorder
        for engine in getattr(pl_module, "_engines", {}).values():  # an engine built before fit searches here too
            engine.retriever = self.recorder
        self._log = SearchLog(root / search_log_name(trainer.global_rank, resumed))

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, idx: int):
        if not isinstance(outputs, StepOutput):
            return
        step, rank = pl_module._rollout_steps - 1, trainer.global_rank
        rollout = outputs.rollout
        ids = [f"{step}/{row}" + (f"@{rank}" if rank else "") for row in range(len(rollout.trajectories))]
        calls = self.recorder.take() if self.recorder is not None else {}
        if self.recorder is not None and self._log is not None:
            self._log.write(search_records(step, rollout.trajectories, ids, calls, self.recorder.server, "train"))
        if self.recorder is not None and rank == 0 and trainer.logger is not None:  # no collective: rank 0 only
            metrics = {f"retrieval/{k}": v for k, v in self.recorder.metrics().items() if v == v}  # NaN dropped
            trainer.logger.log_metrics(metrics, step=trainer.global_step)
        if rank != 0 or self.samples_per_step <= 0:
            return
        protocol, tokenizer = pl_module.rollout_config.protocol, pl_module.tokenizer
        examples = [batch[t.prompt_index] for t in rollout.trajectories]
        outcomes = [trajectory_outcome(t, ex, protocol) for t, ex in zip(rollout.trajectories, examples)]
        rows = []
        for i in sample_rows(outcomes, self.samples_per_step):
            traj, score = rollout.trajectories[i], float(outputs.scores[i])
            row = trajectory_row(traj, examples[i], score, step, ids[i], tokenizer, protocol)
            row["titles"] = [[p.title for p in calls[q].passages] if q in calls else [] for q in traj.queries]
            rows.append(row)
        path = Path(trainer.default_root_dir) / TRAJECTORIES_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, idx: int, loader: int = 0
    ) -> None:
        if self.recorder is None or self._log is None or not hasattr(outputs, "trajectories"):
            return
        step, rank = pl_module._rollout_steps, trainer.global_rank
        rollout = outputs.trajectories
        name = f"{step}/val{idx}" + (f".{loader}" if loader else "")  # batch (and loader) of this validation
        ids = [f"{name}/{row}" + (f"@{rank}" if rank else "") for row in range(len(rollout))]
        calls = self.recorder.take([q for traj in rollout for q in traj.queries])
        self._log.write(search_records(step, rollout, ids, calls, self.recorder.server, phase="val"))

    def _close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._close()
        if not self.report or trainer.global_rank != 0:
            return
        experiment = getattr(trainer.logger, "experiment", None)
        if experiment is not None and hasattr(experiment, "flush"):
            experiment.flush()
        self.report_path = write_run_report(trainer.default_root_dir)
        print(f"report:      {self.report_path}   (searchr1 report {trainer.default_root_dir})", flush=True)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._close()
