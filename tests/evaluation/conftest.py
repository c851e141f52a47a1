"""Fixtures for evaluation tests: the tiny offline Qwen2 (``tiny:micro``, cached), real BM25 over the HotpotQA
sample corpus, the real question samples, and :class:`OracleBackend`, a scripted policy that looks the gold
answer up from the question in its prompt."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
import torch

from searchr1.data import QAExample, read_examples
from searchr1.protocols import normalize_question
from searchr1.rollout import GenerationOutput, SamplingParams

DATA = Path(__file__).resolve().parents[1] / "fixtures"
HOTPOTQA = DATA / "hotpotqa_dev_sample" / "questions.jsonl"
HOTPOTQA_CORPUS = DATA / "hotpotqa_dev_sample" / "corpus.jsonl"
NQ = DATA / "flashrag_sample" / "nq_test.jsonl"
BAMBOOGLE = DATA / "bamboogle" / "questions.jsonl"
_QUESTION = re.compile(r"Question: (.*?)\n")


class OracleBackend:
    """A scripted policy (implements ``GenerationBackend``) that answers with a function of the question.

    The question is read from the prompt (the last ``Question: …`` line of the instruction). Turn 1 searches
    for the question when ``search_first``; a turn whose context already holds an ``<information>`` block
    (or every turn when not ``search_first``) answers ``answer_fn(question)`` inside ``<answer>`` tags, or
    writes a thought without any action when it returns None.

    Args:
        tokenizer: the tokenizer whose ids the engine sends.
        answer_fn: normalised question → answer text, or None for "never answers".
        search_first: search for the question before answering.
    """

    def __init__(
        self, tokenizer, answer_fn: Callable[[str], str | None], search_first: bool = False, search_always=False
    ) -> None:
        self.tokenizer, self.answer_fn = tokenizer, answer_fn
        self.search_first, self.search_always = search_first, search_always
        self.prompts: list[str] = []

    def _respond(self, text: str) -> str:
        question = _QUESTION.findall(text)[-1]
        searched = "\n\n<information>" in text  # an observation block (the instruction names the tag too)
        if self.search_always or (self.search_first and not searched):
            return f"<think> I need to look this up. </think>\n<search> {question} </search>"
        answer = self.answer_fn(question)
        if answer is None:
            return "<think> I do not know. </think>" + self.tokenizer.eos_token
        return f"<think> I know it. </think>\n<answer> {answer} </answer>"

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[GenerationOutput]:
        outs = []
        for ids in prompts:
            text = self.tokenizer.decode(ids, skip_special_tokens=False)
            self.prompts.append(text)
            reply = self._respond(text)
            new = list(self.tokenizer(reply, add_special_tokens=False)["input_ids"])[: params.max_new_tokens]
            reason = "eos" if new and new[-1] == self.tokenizer.eos_token_id else "stop"
            outs.append(GenerationOutput(new, [-1.0] * len(new), reason, None if reason == "eos" else reply[-9:]))
        return outs

    def sync_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """No weights."""

    def sleep(self) -> None:
        """Nothing to free."""

    def wake_up(self) -> None:
        """Nothing to re-acquire."""


def gold_lookup(*example_lists: list[QAExample]) -> Callable[[str], str]:
    """normalised question → first golden answer, over the given examples."""
    table = {normalize_question(ex.question): ex.golden_answers[0] for exs in example_lists for ex in exs}
    return lambda q: table[normalize_question(q)]


@pytest.fixture(scope="session")
def tiny_dir() -> str:
    """The cached ``tiny:micro`` model folder (built once, offline)."""
    from searchr1.models import resolve_model_path

    return resolve_model_path("tiny:micro")


@pytest.fixture(scope="session")
def tokenizer(tiny_dir):
    from searchr1.models import load_tokenizer

    return load_tokenizer(tiny_dir)


@pytest.fixture(scope="session")
def bm25():
    from searchr1.retrieval import BM25Retriever

    return BM25Retriever(corpus=str(HOTPOTQA_CORPUS))


@pytest.fixture(scope="session")
def samples() -> dict[str, list[QAExample]]:
    """Six real questions from each of HotpotQA, NQ and Bamboogle."""
    return {
        "hotpotqa": read_examples(str(HOTPOTQA))[:6],
        "nq": read_examples(str(NQ))[:6],
        "bamboogle": read_examples(str(BAMBOOGLE))[:6],
    }
