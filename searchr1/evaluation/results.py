"""Evaluation records and tables: one :class:`QuestionResult` per trajectory, :class:`DatasetScores` per set,
and the :class:`EvalReport` written as Markdown, CSV, JSON (scores) and JSONL (every trajectory).

The average row is the unweighted mean over datasets (the paper's "Avg." column), not over questions.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from searchr1.rewards.search_quality import SearchQuality, summarize

SCORE_COLUMNS = ("em", "f1", "substring", "searches", "turns", "answered", "response_tokens", "search_failures")
"""Per-dataset means reported in every table (besides the counts)."""

QUALITY_COLUMNS = (
    "answer_in_retrieved",
    "failure_never_searched",
    "failure_not_retrieved",
    "failure_misread",
    "gold_recall",
    "redundant_searches",
    "think_words",
    "repetition",
)
"""Search-quality means per dataset (``searchr1.rewards.search_quality.summarize``; None where no trajectory has
the value, e.g. ``gold_recall`` on a set without gold titles). ``em`` and the three ``failure_*`` shares sum to 1."""

AVERAGE = "average"


@dataclass
class QuestionResult:
    """One scored trajectory (a JSONL line of ``trajectories.jsonl``).

    Attributes:
        dataset: evaluation set name.
        id: question id within the set.
        question: the question text.
        golden_answers: accepted answers.
        sample: sample index (0 unless several samples per question are drawn).
        response_text: the whole response (generated turns, ``<information>`` blocks, invalid-action messages).
        answer: the last ``<answer>…</answer>`` the policy wrote (``searchr1.rewards.score_trajectory``), or None.
        em: exact match of ``answer`` (0.0 without an answer).
        f1: token F1 of ``answer``.
        substring: a golden answer is contained in ``answer``.
        num_searches: searches the policy executed.
        num_turns: generation turns.
        queries: the query of each executed search.
        doc_ids: retrieved passage ids of each executed search.
        context_doc_ids: passages put in the prompt (``rag`` method), else empty.
        finish_reason: how the trajectory ended (see ``searchr1.rollout.Trajectory``).
        response_tokens: response length in tokens (observations included).
        search_failures: searches whose retriever call failed (shown to the policy as ``Search failed``).
        quality: search behaviour and outcome class (``searchr1.rewards.search_quality.assess``).
    """

    dataset: str
    id: str
    question: str
    golden_answers: list[str]
    sample: int
    response_text: str
    answer: str | None
    em: float
    f1: float
    substring: float
    num_searches: int
    num_turns: int
    queries: list[str] = field(default_factory=list)
    doc_ids: list[list[str]] = field(default_factory=list)
    context_doc_ids: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    response_tokens: int = 0
    search_failures: int = 0
    quality: SearchQuality | None = None

    @property
    def retrievals(self) -> int:
        """Search-engine calls made for this question (the ``rag`` prompt's retrieval counts as one)."""
        return self.num_searches + int(bool(self.context_doc_ids))


@dataclass
class DatasetScores:
    """Mean scores of one set (or of the average row).

    Attributes:
        name: set name, or ``"average"``.
        questions: questions scored (for the average row: the total).
        samples: trajectories scored (questions × samples per question).
        em, f1, substring: mean exact match / token F1 / substring match, in [0, 1].
        searches: mean search-engine calls per trajectory (``QuestionResult.retrievals``).
        turns: mean generation turns per trajectory.
        answered: share of trajectories with an ``<answer>``.
        response_tokens: mean response length in tokens.
        search_failures: share of the executed searches whose retriever call failed (0 when none ran): a table
            of EM 0.000 with a dead retrieval server says so here.
        answer_in_retrieved, failure_never_searched, failure_not_retrieved, failure_misread, gold_recall,
            redundant_searches, think_words, repetition: :data:`QUALITY_COLUMNS` (None when not known).
    """

    name: str
    questions: int
    samples: int
    em: float
    f1: float
    substring: float
    searches: float
    turns: float
    answered: float
    response_tokens: float
    search_failures: float = 0.0
    answer_in_retrieved: float | None = None
    failure_never_searched: float | None = None
    failure_not_retrieved: float | None = None
    failure_misread: float | None = None
    gold_recall: float | None = None
    redundant_searches: float | None = None
    think_words: float | None = None
    repetition: float | None = None

    @classmethod
    def from_results(cls, name: str, results: Sequence[QuestionResult]) -> DatasetScores:
        """Means over the trajectories of one set."""
        if not results:
            raise ValueError(f"dataset {name!r} has no results to score")
        n = len(results)

        def mean(values: Sequence[float]) -> float:
            return sum(values) / n

        return cls(
            name=name,
            questions=len({r.id for r in results}),
            samples=n,
            em=mean([r.em for r in results]),
            f1=mean([r.f1 for r in results]),
            substring=mean([r.substring for r in results]),
            searches=mean([r.retrievals for r in results]),
            turns=mean([r.num_turns for r in results]),
            answered=mean([float(r.answer is not None) for r in results]),
            response_tokens=mean([r.response_tokens for r in results]),
            search_failures=sum(r.search_failures for r in results) / max(sum(r.num_searches for r in results), 1),
            **quality_means(results),
        )

    @classmethod
    def macro_average(cls, rows: Sequence[DatasetScores]) -> DatasetScores:
        """Unweighted mean over sets (counts are summed)."""
        if not rows:
            raise ValueError("no dataset rows to average")
        means = {c: sum(getattr(r, c) for r in rows) / len(rows) for c in SCORE_COLUMNS}
        for c in QUALITY_COLUMNS:
            known = [getattr(r, c) for r in rows if getattr(r, c) is not None]
            means[c] = sum(known) / len(known) if known else None
        return cls(AVERAGE, sum(r.questions for r in rows), sum(r.samples for r in rows), **means)


def quality_means(results: Sequence[QuestionResult]) -> dict[str, float | None]:
    """:data:`QUALITY_COLUMNS` over ``results`` (all None when a result has no ``quality``)."""
    qualities = [r.quality for r in results]
    if not qualities or any(q is None for q in qualities):
        return dict.fromkeys(QUALITY_COLUMNS)
    means = summarize(qualities)
    return {c: None if math.isnan(means[c]) else means[c] for c in QUALITY_COLUMNS}


def _cell(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


@dataclass
class EvalReport:
    """Scores of one method on several sets.

    Attributes:
        method: evaluation method name (``search_r1``, ``direct``, ``rag``).
        model: the model path or checkpoint evaluated.
        datasets: one row per set, in evaluation order.
        average: the macro average row.
        settings: rollout / sampling settings used (plain JSON values).
        seconds: wall time of the evaluation.
    """

    method: str
    model: str
    datasets: list[DatasetScores]
    average: DatasetScores
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @classmethod
    def from_results(
        cls, method: str, model: str, results: Sequence[QuestionResult], settings: dict[str, Any] | None = None
    ) -> EvalReport:
        """Group ``results`` by dataset (first-seen order) and score each set."""
        names = list(dict.fromkeys(r.dataset for r in results))
        rows = [DatasetScores.from_results(n, [r for r in results if r.dataset == n]) for n in names]
        return cls(method, model, rows, DatasetScores.macro_average(rows), dict(settings or {}))

    @property
    def rows(self) -> list[DatasetScores]:
        """Dataset rows followed by the average row."""
        return [*self.datasets, self.average]

    def to_markdown(self) -> str:
        """Per-dataset table: questions, EM, F1, substring match, searches, turns, answered share, search failures,
        and the search-quality shares."""
        head = (
            "| dataset | questions | EM | F1 | substring | searches | turns | answered | search_failures "
            "| answer retrieved | never searched | not retrieved | misread | gold recall |"
        )
        lines = [
            f"### {self.method} — {self.model}",
            "",
            head,
            "|" + "---|" * head.count(" | ") + "---|",
        ]
        for r in self.rows:
            name = f"**{r.name}**" if r.name == AVERAGE else r.name
            lines.append(
                f"| {name} | {r.questions} | {r.em:.3f} | {r.f1:.3f} | {r.substring:.3f} | "
                f"{r.searches:.2f} | {r.turns:.2f} | {r.answered:.3f} | {r.search_failures:.3f} | "
                + " | ".join(_cell(getattr(r, c)) for c in QUALITY_COLUMNS[:5])
                + " |"
            )
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """One CSV line per dataset plus the average: method, dataset, counts and every score column."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["method", "dataset", "questions", "samples", *SCORE_COLUMNS, *QUALITY_COLUMNS])
        for r in self.rows:
            quality = ["" if getattr(r, c) is None else f"{getattr(r, c):.6f}" for c in QUALITY_COLUMNS]
            writer.writerow(
                [self.method, r.name, r.questions, r.samples, *(f"{getattr(r, c):.6f}" for c in SCORE_COLUMNS)]
                + quality
            )
        return buf.getvalue()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the whole report."""
        return {
            "method": self.method,
            "model": self.model,
            "datasets": [asdict(r) for r in self.datasets],
            "average": asdict(self.average),
            "settings": self.settings,
            "seconds": self.seconds,
        }


def comparison_markdown(reports: Sequence[EvalReport], metric: str = "em") -> str:
    """The paper's layout: one row per method, one column per dataset plus the average (``metric`` values)."""
    if metric not in (*SCORE_COLUMNS, *QUALITY_COLUMNS):
        raise ValueError(f"unknown metric {metric!r}; valid: {', '.join((*SCORE_COLUMNS, *QUALITY_COLUMNS))}")
    names = list(dict.fromkeys(d.name for rep in reports for d in rep.datasets))
    head = "| method | " + " | ".join(names) + " | avg |"
    lines = [head, "|" + "---|" * (len(names) + 2)]
    for rep in reports:
        by_name = {d.name: getattr(d, metric) for d in rep.datasets}
        cells = [_cell(by_name[n]) if n in by_name else "–" for n in names]
        lines.append(f"| {rep.method} | " + " | ".join(cells) + f" | {_cell(getattr(rep.average, metric))} |")
    return "\n".join(lines) + "\n"


def write_report(report: EvalReport, results: Sequence[QuestionResult], out_dir: str | Path) -> dict[str, Path]:
    """Write ``scores.md``, ``scores.csv``, ``scores.json`` and ``trajectories.jsonl`` into ``out_dir``.

    Returns:
        The written paths by kind (``markdown``, ``csv``, ``json``, ``trajectories``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": out / "scores.md",
        "csv": out / "scores.csv",
        "json": out / "scores.json",
        "trajectories": out / "trajectories.jsonl",
    }
    paths["markdown"].write_text(report.to_markdown(), encoding="utf-8")
    paths["csv"].write_text(report.to_csv(), encoding="utf-8")
    paths["json"].write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    with open(paths["trajectories"], "w", encoding="utf-8") as f:
        for r in results:
            f.write(json.dumps(asdict(r), ensure_ascii=False) + "\n")
    return paths
