"""What a run tells its user at the end: held-out EM and searches before and after RL (``RunSummary``, printed and
written to ``<default_root_dir>/summary.json``) and PNG training curves in the run folder (``CurvePlots``).

Both are on in the embedded default (``searchr1 fit`` with no config). ``RunSummary`` evaluates the validation
sets greedily (the module's evaluation rollout) at the start of training and again at its end; under several ranks
every rank evaluates its shard and the means are reduced over all ranks, rank 0 writes and prints.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from searchr1.training.metrics import EVAL_FIELDS, EvalTally

SUMMARY_FILE = "summary.json"
SEARCH_QUALITY_KEYS = EVAL_FIELDS[4:]
"""``answer_in_retrieved`` and the ``failure_*`` shares (of all held-out questions; with ``em`` they sum to 1)."""


def held_out_scores(trainer: Trainer, module: LightningModule) -> dict[str, float]:
    """Greedy EM, searches per question and the search-quality shares over the datamodule's validation sets (mean
    over sources).

    Every rank must call it (the tallies are reduced over ranks). Returns ``{"em", "searches", "questions"}`` and
    :data:`SEARCH_QUALITY_KEYS`.
    """
    tally = EvalTally(protocol=getattr(getattr(module, "rollout_config", None), "protocol", "search_r1"))
    loaders = trainer.datamodule.val_dataloader() if trainer.datamodule is not None else []
    with torch.no_grad():
        for loader in loaders:
            for batch in loader:
                tally.add_rollout(module.rollout(batch, train=False), batch, module.device)
    local = sum((v[0] for v in tally.sums.values()), torch.zeros((), device=module.device))
    questions = int(trainer.strategy.reduce(local, reduce_op="sum").item())
    means = tally.means(trainer, module.device)
    names = ("em", "searches", *SEARCH_QUALITY_KEYS)
    if not means:
        return {**dict.fromkeys(names, float("nan")), "questions": 0}
    out: dict[str, float] = {n: float(torch.stack([v[n] for v in means.values()]).mean()) for n in names}
    return {**out, "questions": questions}


class RunSummary(Callback):
    """Held-out EM and searches per question before and after training, printed as a table at the end of ``fit``
    and written to ``<default_root_dir>/summary.json`` (keys ``em_before``, ``em_after``, ``searches_before``,
    ``searches_after``, ``seconds``, ``steps``, paths and next commands).

    Args:
        evaluate_before: also evaluate before the first step (False: the ``*_before`` keys are null).
        corpus: the corpus file named in the printed ``searchr1 eval`` / ``searchr1 infer`` commands.
        question: the question of the printed ``searchr1 infer`` command.
    """

    def __init__(self, evaluate_before: bool = True, corpus: str | None = None, question: str | None = None) -> None:
        self.evaluate_before = evaluate_before
        self.corpus = corpus
        self.question = question
        self.before: dict[str, float] | None = None
        self.after: dict[str, float] | None = None
        self.steps = 0
        self._t0 = 0.0
        self._train_seconds = 0.0

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.evaluate_before:
            rank_zero_info("searchr1: held-out evaluation before training ...")
            self.before = held_out_scores(trainer, pl_module)
        self._train_t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, idx: int):
        self.steps += 1

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._train_seconds = time.perf_counter() - self._train_t0
        rank_zero_info("searchr1: held-out evaluation after training ...")
        self.after = held_out_scores(trainer, pl_module)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        async_part = _async_part(pl_module)  # every rank: the async counts are summed over the ranks (collectives)
        if trainer.global_rank != 0 or self.after is None:
            return
        summary = self.summary(trainer, pl_module, async_part)
        path = Path(trainer.default_root_dir) / SUMMARY_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=1) + "\n")
        print(format_summary(summary, path), flush=True)

    def summary(
        self, trainer: Trainer, pl_module: LightningModule, async_part: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The ``summary.json`` content (rank 0, at the end of fit); ``async_part``: :func:`_async_part`, which every
        rank computes (None: this process's own, one process only)."""
        before = self.before or {}
        root = Path(trainer.default_root_dir)
        ckpt = getattr(trainer.checkpoint_callback, "last_model_path", "") or None
        exports = [cb for cb in trainer.callbacks if type(cb).__name__ == "ExportPretrained"]
        hf = exports[0]._root(trainer) / "last" if exports else None
        logger = trainer.logger
        tensorboard = str(logger.save_dir) if type(logger).__name__ == "TensorBoardLogger" else None
        curves = [str(p) for cb in trainer.callbacks if isinstance(cb, CurvePlots) for p in cb.plot(trainer)]
        return {
            "em_before": before.get("em"),
            "em_after": self.after["em"],
            "searches_before": before.get("searches"),
            "searches_after": self.after["searches"],
            **{f"{k}_before": before.get(k) for k in SEARCH_QUALITY_KEYS},
            **{f"{k}_after": self.after[k] for k in SEARCH_QUALITY_KEYS},
            "questions": self.after["questions"],
            "steps": self.steps,
            "seconds": round(time.perf_counter() - self._t0, 1),
            "train_seconds": round(self._train_seconds, 1),
            "root_dir": str(root),
            "checkpoint": ckpt,
            "hf_export": str(hf) if hf is not None and hf.exists() else None,
            "tensorboard": tensorboard,
            "curves": curves,
            "val_files": [s.path for s in getattr(trainer.datamodule, "val_sources_spec", [])],
            "corpus": self.corpus,
            "question": self.question,
            "search_cost": _spend(pl_module),
            **(_async_part(pl_module) if async_part is None else async_part),
        }


def _spend(pl_module: LightningModule) -> dict[str, Any] | None:
    """The paid search engine's spend (``searchr1.training.search_cost``), None for a free retriever."""
    from searchr1.training.search_cost import module_spend

    spend = module_spend(pl_module)
    return None if spend is None else spend.as_dict()


def _async_part(pl_module: LightningModule) -> dict[str, Any]:
    """``{"async": {...}}`` for a run trained on rollout servers (max_staleness, staleness seen, dropped groups); with
    several ranks every rank must call it (the counts are summed over the ranks)."""
    summary = getattr(pl_module, "async_summary", lambda: None)()
    return {"async": summary} if summary is not None else {}


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def format_summary(s: dict[str, Any], path: Path) -> str:
    """The end-of-fit table and the where/next lines (plain text)."""
    gain = None if s["em_before"] is None else s["em_after"] - s["em_before"]
    rows = [
        f"{'':<28}{'before RL':>12}{'after RL':>12}",
        f"{'held-out EM':<28}{_fmt(s['em_before'], 3):>12}{_fmt(s['em_after'], 3):>12}",
        f"{'searches per question':<28}{_fmt(s['searches_before'], 2):>12}{_fmt(s['searches_after'], 2):>12}",
        *(
            f"{label:<28}{_fmt(s.get(k + '_before'), 3):>12}{_fmt(s.get(k + '_after'), 3):>12}"
            for k, label in (
                ("answer_in_retrieved", "answer retrieved"),
                ("failure_never_searched", "wrong: never searched"),
                ("failure_not_retrieved", "wrong: not retrieved"),
                ("failure_misread", "wrong: misread"),
            )
        ),
    ]
    lines = ["", "searchr1: run summary", *rows]
    where = f"on {s['questions']} held-out questions; {s['steps']} RL steps; fit took {s['seconds']:.0f} s"
    lines.append(f"EM gain {_fmt(gain, 3)} {where}")
    if s.get("search_cost"):
        c = s["search_cost"]
        paid = f"{c['requests']} paid {c['engine']} requests, scope total {c['scope_cost']:.4f}"
        lines.append(f"search cost: {c['cost']:.4f} ({paid})")
    lines.append(f"summary:     {path}")
    for key, label in (("checkpoint", "checkpoint"), ("hf_export", "HF export"), ("tensorboard", "TensorBoard")):
        if s.get(key):
            lines.append(f"{label + ':':<13}{s[key]}")
    if s["curves"]:
        lines.append(f"curves:      {Path(s['curves'][0]).parent}/ ({', '.join(Path(c).name for c in s['curves'])})")
    lines.append("next:")
    if s.get("tensorboard"):
        lines.append(f"  tensorboard --logdir {s['tensorboard']}")
    model = s.get("hf_export") or s.get("checkpoint")
    corpus = f" --corpus {s['corpus']}" if s.get("corpus") else ""
    if model and s["val_files"]:
        lines.append(f"  searchr1 eval --model {model}{corpus} --datasets heldout={s['val_files'][0]} --device cpu")
    if model and s.get("question"):
        lines.append(f'  searchr1 infer --model {model}{corpus} --device cpu "{s["question"]}"')
    return "\n".join(lines) + "\n"


class CurvePlots(Callback):
    """At the end of ``fit``, PNG curves of the run (reward/EM, searches per sample, response length, KL, entropy)
    in ``<log_dir>/curves`` (``searchr1.evaluation.plots``; ``tools/plot_run.py`` draws them for older runs).

    ``searchr1 fit`` adds it to every run (``--curves.enabled=false`` turns it off). Needs matplotlib and a
    TensorBoard logger: without a TensorBoard logger it does nothing, without matplotlib it says so in one line.

    Args:
        enabled: draw the curves.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.written: list[Path] | None = None

    def plot(self, trainer: Trainer) -> list[Path]:
        """Draw once (rank 0, TensorBoard logger); returns the PNG paths (empty when nothing was drawn)."""
        logger = trainer.logger
        if self.written is not None or not self.enabled or trainer.global_rank != 0:
            return self.written or []
        self.written = []
        if logger is None or type(logger).__name__ != "TensorBoardLogger":
            return []
        from searchr1.evaluation.plots import plot_run

        logger.experiment.flush()
        try:
            self.written = plot_run(logger.log_dir, Path(logger.log_dir) / "curves")
        except ImportError as err:
            rank_zero_warn(f"CurvePlots: no curves written ({err}); or turn them off: --curves.enabled=false")
        return self.written

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.plot(trainer)
