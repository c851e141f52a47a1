"""Prompts of the evaluation methods: Search-R1 and the two baselines of the paper's comparison table.

``search_r1`` is Search-R1's own instruction (``searchr1.protocols.INSTRUCTION_TEMPLATE``, the only copy of
that text). The baselines follow the paper's rows (Table 2, "Direct Inference" and "RAG"):

* ``direct``: answer from the model's own knowledge, no search, one generation turn (``max_turns=0``);
* ``rag``: the question's top-k passages are retrieved once and put in the prompt, then one generation turn.

Departure: the paper runs its baselines through FlashRAG with FlashRAG's prompts; ours are written in
Search-R1's style (the answer goes inside ``<answer></answer>``), so all rows are scored by the same
answer extraction and the same exact match.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from searchr1.protocols import INSTRUCTION_TEMPLATE, get_protocol, normalize_question
from searchr1.registry import Registry
from searchr1.retrieval import Passage, format_passages

SEARCH_R1_TEMPLATE = INSTRUCTION_TEMPLATE
"""Search-R1's instruction (re-exported from ``searchr1.protocols``); ``{question}``."""

DIRECT_TEMPLATE = (
    "Answer the given question. "
    "You may reason inside <think> and </think> first. "
    "Then provide the answer directly inside <answer> and </answer>, without detailed illustrations. "
    "For example, <answer> Beijing </answer>. Question: {question}\n"
)
"""Direct-inference baseline (no search); ``{question}``."""

RAG_TEMPLATE = (
    "Answer the given question using the retrieved documents below. "
    "You may reason inside <think> and </think> first. "
    "Then provide the answer directly inside <answer> and </answer>, without detailed illustrations. "
    "For example, <answer> Beijing </answer>.\n"
    "Documents:\n{documents}"
    "Question: {question}\n"
)
"""RAG baseline: ``{documents}`` are the passages rendered as Search-R1 observations (``Doc i(Title: …) …``)."""


@dataclass(frozen=True)
class EvalMethod:
    """How one row of the comparison table is produced.

    Attributes:
        name: registry name (``search_r1``, ``direct``, ``rag``).
        template: instruction text with ``{question}`` (and ``{documents}`` when ``uses_context``).
        searches: the policy may call the search engine (else the rollout runs one turn, ``max_turns=0``).
        uses_context: passages retrieved for the question once are put in the prompt.
        description: one line for ``--help`` and the docs.
    """

    name: str
    template: str
    searches: bool
    uses_context: bool
    description: str

    def instruction(self, question: str, passages: Sequence[Passage] | None = None) -> str:
        """The raw instruction for ``question`` (``passages`` required exactly when ``uses_context``)."""
        if self.uses_context and passages is None:
            raise ValueError(f"method {self.name!r} puts retrieved passages in the prompt; pass them")
        documents = format_passages(passages) if passages is not None else ""
        return self.template.format(question=normalize_question(question), documents=documents)

    def build_prompt(
        self,
        question: str,
        tokenizer: Any | None = None,
        use_chat_template: bool = True,
        passages: Sequence[Passage] | None = None,
        protocol: str = "search_r1",
    ) -> str:
        """The policy prompt: the instruction as one user message through the chat template (when there is one).

        A method that searches uses the rollout protocol's prompt (``Protocol.build_prompt`` of ``protocol``:
        Search-R1's instruction for ``search_r1``, the tool-calling prompt for ``tool_call``).
        """
        if self.searches:
            return get_protocol(protocol).build_prompt(question, tokenizer, use_chat_template)
        text = self.instruction(question, passages)
        if use_chat_template and tokenizer is not None and getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
        return text


METHODS: Registry[EvalMethod] = Registry("evaluation method")
for _method in (
    EvalMethod("search_r1", SEARCH_R1_TEMPLATE, True, False, "reason and call the search engine (Search-R1)"),
    EvalMethod("direct", DIRECT_TEMPLATE, False, False, "answer directly, no retrieval (paper: Direct Inference)"),
    EvalMethod("rag", RAG_TEMPLATE, False, True, "retrieve top-k for the question once, then answer (paper: RAG)"),
):
    METHODS.register(_method.name)(_method)


def get_method(method: str | EvalMethod) -> EvalMethod:
    """Resolve a method by name (unknown names list the valid ones) or pass an :class:`EvalMethod` through."""
    return method if isinstance(method, EvalMethod) else METHODS.get(method)
