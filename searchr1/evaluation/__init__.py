"""Evaluation and inference: the 7-dataset EM table, baselines, trajectory dumps, ask-a-question, run plots.

``Evaluator`` rolls out a method (``search_r1``, ``direct``, ``rag``) with the training rollout engine and
scores every trajectory with ``searchr1.rewards``; ``write_report`` writes Markdown/CSV/JSON tables and a
JSONL of trajectories; ``infer`` prints one question's turns, searches and answer; ``plot_run`` turns a
run's TensorBoard logs into PNG curves. Console scripts: ``searchr1-eval``, ``searchr1-infer``.
"""

from __future__ import annotations

from searchr1._lazy import lazy_exports
from searchr1.evaluation.datasets import STANDARD_DATASETS, EvalDataset, load_datasets, resolve_datasets
from searchr1.evaluation.prompts import DIRECT_TEMPLATE, METHODS, RAG_TEMPLATE, EvalMethod, get_method
from searchr1.evaluation.results import (
    DatasetScores,
    EvalReport,
    QuestionResult,
    comparison_markdown,
    write_report,
)

_LAZY = {
    "Evaluator": "searchr1.evaluation.evaluator",
    "NoRetriever": "searchr1.retrieval.null",
    "greedy_config": "searchr1.evaluation.evaluator",
    "question_result": "searchr1.evaluation.evaluator",
    "infer": "searchr1.evaluation.inference",
    "Printer": "searchr1.evaluation.inference",
    "InferenceResult": "searchr1.evaluation.inference",
    "load_policy": "searchr1.evaluation.loading",
    "build_retriever": "searchr1.evaluation.loading",
    "build_backend_for": "searchr1.evaluation.loading",
    "export_policy": "searchr1.evaluation.loading",
    "plot_run": "searchr1.evaluation.plots",
    "read_scalars": "searchr1.evaluation.plots",
}

__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "DIRECT_TEMPLATE",
    "METHODS",
    "RAG_TEMPLATE",
    "STANDARD_DATASETS",
    "DatasetScores",
    "EvalDataset",
    "EvalMethod",
    "EvalReport",
    "QuestionResult",
    "comparison_markdown",
    "get_method",
    "load_datasets",
    "resolve_datasets",
    "write_report",
    *_LAZY,
]
