"""The evaluator: roll out a method on QA sets with the real rollout engine and score every trajectory.

Every method goes through :class:`~searchr1.rollout.RolloutEngine` (the code that trains the policy), so the
evaluated behaviour is the trained behaviour. Baselines differ only in the prompt and in ``max_turns``:
``direct`` and ``rag`` run one generation turn (``max_turns=0``) with a retriever that is never called.
Scores come from ``searchr1.rewards.score_trajectory`` (the policy's own last ``<answer>``; the same scorer
as the training module's ``train/em`` and ``val/<source>/em``). Greedy decoding unless the rollout config says
``do_sample=True``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from searchr1.data import QAExample
from searchr1.evaluation.prompts import EvalMethod, get_method
from searchr1.evaluation.results import EvalReport, QuestionResult
from searchr1.retrieval import Passage, Retriever
from searchr1.retrieval.null import NoRetriever
from searchr1.retrieval.search_log import SearchLog, SearchRecorder, context_records, search_records
from searchr1.rewards import score_trajectory
from searchr1.rewards.search_quality import assess, gold_titles
from searchr1.rollout import GenerationBackend, RolloutConfig, RolloutEngine, Trajectory


def greedy_config(**overrides: Any) -> RolloutConfig:
    """Search-R1's rollout settings with greedy decoding (the evaluation default); ``overrides`` replace fields."""
    return RolloutConfig(**{"do_sample": False, **overrides})


def question_result(
    dataset: str,
    example: QAExample,
    traj: Trajectory,
    sample: int = 0,
    context: Sequence[Passage] = (),
    protocol: str = "search_r1",
) -> QuestionResult:
    """Score one trajectory against the example's golden answers (``searchr1.rewards.score_trajectory``) and assess
    its searches (``searchr1.rewards.search_quality.assess``; gold titles from the example's metadata)."""
    golds = list(example.golden_answers)
    score = score_trajectory(traj, golds)
    titles = gold_titles(example.metadata)
    quality = assess(traj, golds, score.em > 0, titles, protocol, [p.contents for p in context])
    return QuestionResult(
        dataset=dataset,
        id=example.id,
        question=example.question,
        golden_answers=golds,
        sample=sample,
        response_text=traj.response_text,
        answer=score.answer,
        em=score.em,
        f1=score.f1,
        substring=score.substring,
        num_searches=traj.num_searches,
        num_turns=traj.num_turns,
        queries=list(traj.queries),
        doc_ids=[list(d) for d in traj.doc_ids],
        context_doc_ids=[p.id for p in context],
        finish_reason=traj.finish_reason,
        response_tokens=len(traj.response_ids),
        search_failures=traj.search_failures,
        quality=quality,
    )


class Evaluator:
    """Evaluates one method (Search-R1 or a baseline) with a generation backend on QA sets.

    Args:
        backend: any :class:`~searchr1.rollout.GenerationBackend` (``HFBackend``, ``VLLMBackend``, a scripted one).
        tokenizer: the policy's tokenizer.
        retriever: the search engine; required by ``search_r1`` and ``rag``, unused by ``direct``.
        method: ``search_r1``, ``direct`` or ``rag`` (or an :class:`EvalMethod`).
        rollout: rollout settings; default :func:`greedy_config` (Search-R1's settings, greedy). Methods
            without search override ``max_turns`` to 0.
        batch_size: questions per engine call.
        num_samples: trajectories per question (all are scored; the means are over trajectories).
        seed: base seed for sampling (batch ``i`` uses ``seed + i``); unused when greedy.
        use_chat_template: format prompts with the tokenizer's chat template (instruct models).
        model_name: what the report calls the model.
        show_progress: show a tqdm progress bar.
        search_log: write every search of :meth:`run` to this Parquet file
            (:mod:`searchr1.retrieval.search_log`; phase ``eval``, step = batch number, trajectory =
            ``<dataset>/<id>/<sample>``); ``rag``'s retrieval for the prompt is logged too (trajectory
            ``<dataset>/<id>``, turn 0).
    """

    def __init__(
        self,
        backend: GenerationBackend,
        tokenizer: Any,
        retriever: Retriever | None = None,
        method: str | EvalMethod = "search_r1",
        rollout: RolloutConfig | None = None,
        batch_size: int = 64,
        num_samples: int = 1,
        seed: int | None = None,
        use_chat_template: bool = True,
        model_name: str = "model",
        show_progress: bool = True,
        search_log: str | Path | None = None,
    ) -> None:
        if batch_size <= 0 or num_samples <= 0:
            raise ValueError(f"batch_size and num_samples must be positive, got {batch_size} and {num_samples}")
        self.method = get_method(method)
        config = rollout or greedy_config()
        if not self.method.searches:
            config = dataclasses.replace(config, max_turns=0)
        if retriever is None and (self.method.searches or self.method.uses_context):
            raise ValueError(
                f"method {self.method.name!r} needs a retriever: pass a BM25 corpus/index or a retrieval server URL"
            )
        self.retriever = retriever
        self.tokenizer = tokenizer
        self.config = config
        retrieves = self.method.searches or self.method.uses_context
        self.search_log = Path(search_log) if search_log is not None and retrieves else None
        self.recorder = SearchRecorder(retriever) if self.search_log is not None else None  # type: ignore[arg-type]
        engine_retriever = (self.recorder or retriever) if self.method.searches else NoRetriever()
        self.engine = RolloutEngine(backend, engine_retriever, tokenizer, config)
        self._log: SearchLog | None = None
        self._batches = 0
        self.batch_size, self.num_samples, self.seed = batch_size, num_samples, seed
        self.use_chat_template, self.model_name, self.show_progress = use_chat_template, model_name, show_progress

    @property
    def settings(self) -> dict[str, Any]:
        """The settings recorded in the report (plain JSON values)."""
        return {
            "method": self.method.name,
            "rollout": dataclasses.asdict(self.config),
            "num_samples": self.num_samples,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "use_chat_template": self.use_chat_template,
        }

    def prompts(self, questions: Sequence[str]) -> tuple[list[str], list[list[Passage]]]:
        """The method's prompts for ``questions`` and the passages put in them (empty lists without context)."""
        questions = list(questions)
        if self.method.uses_context:
            contexts = (self.recorder or self.retriever).search(questions, self.config.topk)  # type: ignore[union-attr]
        else:
            contexts = [[] for _ in questions]
        prompts = [
            self.method.build_prompt(
                q,
                self.tokenizer,
                self.use_chat_template,
                ctx if self.method.uses_context else None,
                self.config.protocol,
            )
            for q, ctx in zip(questions, contexts)
        ]
        return prompts, contexts

    def evaluate_batch(
        self, dataset: str, examples: Sequence[QAExample], seed: int | None = None
    ) -> list[QuestionResult]:
        """Roll out and score one batch of examples of ``dataset``."""
        prompts, contexts = self.prompts([ex.question for ex in examples])
        batch = self.engine.generate(prompts, n=self.num_samples, seed=seed)
        results = []
        for row, traj in enumerate(batch.trajectories):
            i = traj.prompt_index
            sample, protocol = row % self.num_samples, self.config.protocol
            results.append(question_result(dataset, examples[i], traj, sample, contexts[i], protocol))
        if self.recorder is not None and self._log is not None:
            calls, server = self.recorder.take(), self.recorder.server
            if self.method.uses_context:  # the prompt's retrieval: one row per question, turn 0
                questions, qids = [ex.question for ex in examples], [f"{dataset}/{ex.id}" for ex in examples]
                self._log.write(context_records(self._batches, questions, qids, calls, server, "eval"))
            ids = [f"{r.dataset}/{r.id}/{r.sample}" for r in results]
            self._log.write(search_records(self._batches, batch.trajectories, ids, calls, server, "eval"))
        self._batches += 1
        return results

    def run(self, datasets: Mapping[str, Sequence[QAExample]]) -> tuple[EvalReport, list[QuestionResult]]:
        """Evaluate every set; returns the report and every scored trajectory (in dataset, question order)."""
        if not datasets or any(len(v) == 0 for v in datasets.values()):
            raise ValueError("every dataset needs at least one question")
        start = time.perf_counter()
        results: list[QuestionResult] = []
        total = sum(len(v) for v in datasets.values())
        step = 0
        self._log = SearchLog(self.search_log) if self.search_log is not None else None
        try:
            with tqdm(total=total, desc=f"eval {self.method.name}", unit="q", disable=not self.show_progress) as bar:
                for name, examples in datasets.items():
                    done: list[QuestionResult] = []
                    for lo in range(0, len(examples), self.batch_size):
                        seed = None if self.seed is None else self.seed + step
                        done.extend(self.evaluate_batch(name, examples[lo : lo + self.batch_size], seed))
                        step += 1
                        bar.update(min(self.batch_size, len(examples) - lo))
                        bar.set_postfix(dataset=name, em=f"{sum(r.em for r in done) / len(done):.3f}")
                    results.extend(done)
        finally:  # the searches so far stay readable when a batch fails (a replay missing a query, say)
            if self._log is not None:
                self._log.close()
        report = EvalReport.from_results(self.method.name, self.model_name, results, self.settings)
        report.seconds = time.perf_counter() - start
        return report, results
