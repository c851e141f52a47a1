"""Ask one question and watch the policy reason and search, turn by turn (Search-R1's ``infer.py``).

The real :class:`~searchr1.rollout.RolloutEngine` runs the question; two thin observers around its backend and
retriever print each turn's generated text as the turn completes, then the search query and the titles of
the passages it returned. Nothing about the rollout differs from training or evaluation.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TextIO

import torch

from searchr1.evaluation.prompts import EvalMethod
from searchr1.retrieval import Passage, RetrievalError, Retriever
from searchr1.rewards import policy_answer
from searchr1.rollout import GenerationBackend, GenerationOutput, RolloutConfig, RolloutEngine, SamplingParams


class Printer:
    """Writes labelled sections to a stream (bold/coloured labels on a terminal).

    Args:
        stream: where to write (default ``sys.stdout``).
        color: ANSI colours; default: only when ``stream`` is a terminal.
    """

    COLORS = {"turn": "36", "search": "33", "doc": "32", "answer": "1;35", "info": "2"}

    def __init__(self, stream: TextIO | None = None, color: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.color = self.stream.isatty() if color is None else color

    def label(self, kind: str, text: str) -> str:
        """``text`` coloured for ``kind`` (plain when colours are off)."""
        return f"\033[{self.COLORS[kind]}m{text}\033[0m" if self.color else text

    def write(self, kind: str, title: str, body: str = "") -> None:
        """Print ``[title] body`` and flush."""
        self.stream.write(f"{self.label(kind, f'[{title}]')} {body}\n")
        self.stream.flush()


class StreamingBackend:
    """Forwards to a backend and prints every generated turn as soon as it is returned.

    Args:
        inner: the backend that generates.
        tokenizer: decodes the sampled ids.
        printer: where the text goes.
    """

    def __init__(self, inner: GenerationBackend, tokenizer: Any, printer: Printer) -> None:
        self.inner, self.tokenizer, self.printer = inner, tokenizer, printer
        self.turn = 0

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[GenerationOutput]:
        """Generate with the inner backend, then print each continuation."""
        outputs = self.inner.generate(prompts, params)
        for out in outputs:
            self.turn += 1
            text = self.tokenizer.decode(out.token_ids, skip_special_tokens=True)
            self.printer.write("turn", f"turn {self.turn}", "\n" + text.strip())
        return outputs

    def sync_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        self.inner.sync_weights(named_tensors)

    def sleep(self) -> None:
        self.inner.sleep()

    def wake_up(self) -> None:
        self.inner.wake_up()


class StreamingRetriever:
    """Forwards to a retriever and prints each query and the titles of its passages (``[no results]`` for none,
    ``[search failed: <reason>]`` when the retriever raised).

    Args:
        inner: the retriever that searches.
        printer: where the text goes.
    """

    def __init__(self, inner: Retriever, printer: Printer) -> None:
        self.inner, self.printer = inner, printer

    def search(self, queries: list[str], topk: int) -> list[list[Passage]]:
        """Search with the inner retriever, then print every query with its passage titles."""
        for q in queries:
            self.printer.write("search", "search", q)
        try:
            results = self.inner.search(queries, topk)
        except RetrievalError as err:  # the engine shows the policy "Search failed: …"; say it here too
            self.printer.write("search", f"search failed: {err}")
            raise
        for passages in results:
            if not passages:
                self.printer.write("doc", "no results")
            for rank, p in enumerate(passages, start=1):
                self.printer.write("doc", f"doc {rank}", f"{p.title} (id {p.id})")
        return results


@dataclass
class InferenceResult:
    """What one question produced.

    Attributes:
        question: the question asked.
        answer: the final ``<answer>`` content, or None.
        response_text: the whole response (turns and observations).
        queries: the search queries executed.
        doc_ids: passage ids per search.
        finish_reason: how the trajectory ended.
    """

    question: str
    answer: str | None
    response_text: str
    queries: list[str]
    doc_ids: list[list[str]]
    finish_reason: str | None


def infer(
    question: str,
    backend: GenerationBackend,
    tokenizer: Any,
    retriever: Retriever | None,
    config: RolloutConfig | None = None,
    method: str | EvalMethod = "search_r1",
    use_chat_template: bool = True,
    printer: Printer | None = None,
    seed: int | None = None,
) -> InferenceResult:
    """Answer ``question``, printing the reasoning, each query, the retrieved titles and the answer.

    Args:
        question: the question.
        backend: the generation backend.
        tokenizer: the policy's tokenizer.
        retriever: the search engine (needed by ``search_r1`` and ``rag``).
        config: rollout settings (default: Search-R1's, greedy).
        method: ``search_r1`` (default), ``direct`` or ``rag``.
        use_chat_template: format the prompt with the chat template.
        printer: output (default stdout).
        seed: sampling seed when ``config.do_sample``.
    """
    from searchr1.evaluation.evaluator import Evaluator

    printer = printer or Printer()
    printer.write("info", "question", question)
    watched = StreamingRetriever(retriever, printer) if retriever is not None else None
    evaluator = Evaluator(
        StreamingBackend(backend, tokenizer, printer),
        tokenizer,
        watched,
        method=method,
        rollout=config,
        use_chat_template=use_chat_template,
        show_progress=False,
    )
    prompts, _ = evaluator.prompts([question])  # rag: the prompt's retrieval is printed too
    engine: RolloutEngine = evaluator.engine
    traj = engine.generate(prompts, n=1, seed=seed).trajectories[0]
    answer = policy_answer(traj)
    printer.write("answer", "answer", answer if answer is not None else f"(none; finished by {traj.finish_reason})")
    return InferenceResult(question, answer, traj.response_text, traj.queries, traj.doc_ids, traj.finish_reason)
