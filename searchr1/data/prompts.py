"""Prompt and observation text of Search-R1 (the only place this text lives).

The instruction is Search-R1's ``make_prefix`` template for instruct models
(``scripts/data_process/nq_search.py``), applied through the tokenizer's chat template as a single
user message. The invalid-action text and the ``<information>`` wrapper are those of
``search_r1/llm_agent/generation.py``. Departure: a search that failed after the retriever's own
retries is shown to the policy as ``Search failed: <reason>`` inside ``<information>`` (Search-R1
would crash the run).
"""

from __future__ import annotations

from typing import Any

INSTRUCTION_TEMPLATE = (
    "Answer the given question. "
    "You must conduct reasoning inside <think> and </think> first every time you get new information. "
    "After reasoning, if you find you lack some knowledge, you can call a search engine by <search> query </search> "
    "and it will return the top searched results between <information> and </information>. "
    "You can search as many times as your want. "
    "If you find no further external knowledge needed, you can directly provide the answer inside <answer> and "
    "</answer>, without detailed illustrations. For example, <answer> Beijing </answer>. Question: {question}\n"
)
"""Search-R1's instruct-model prefix; ``{question}`` is the normalised question."""

INVALID_ACTION_TEXT = (
    "\nMy previous action is invalid. "
    "If I want to search, I should put the query between <search> and </search>. "
    "If I want to give the final answer, I should put the answer between <answer> and </answer>. "
    "Let me try again.\n"
)
"""Appended (loss-masked) after a turn that contains neither a search nor an answer action."""

OBSERVATION_TEMPLATE = "\n\n<information>{body}</information>\n\n"
"""Wraps the formatted passages (or the failure message) of one search."""

SEARCH_FAILED_TEMPLATE = "Search failed: {reason}"
"""Observation body when the retriever raised after its retries."""

SEARCH_TAGS = ("<search>", "</search>")
ANSWER_TAGS = ("<answer>", "</answer>")
INFORMATION_TAGS = ("<information>", "</information>")
THINK_TAGS = ("<think>", "</think>")


def normalize_question(question: str) -> str:
    """Strip whitespace and add a trailing ``?`` when missing (as Search-R1's data scripts do)."""
    question = question.strip()
    if not question.endswith("?"):
        question += "?"
    return question


def instruction(question: str) -> str:
    """The raw Search-R1 instruction for ``question`` (no chat template)."""
    return INSTRUCTION_TEMPLATE.format(question=normalize_question(question))


def build_prompt(question: str, tokenizer: Any | None = None, use_chat_template: bool = True) -> str:
    """Build the policy prompt for one question.

    Args:
        question: the question text.
        tokenizer: a Hugging Face tokenizer; when it has a ``chat_template`` and ``use_chat_template``
            is True, the instruction is sent as one user message with ``add_generation_prompt=True``.
        use_chat_template: set False for base models (the raw instruction is returned).

    Returns:
        The prompt string (to be tokenized without adding special tokens again).
    """
    text = instruction(question)
    if use_chat_template and tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
    return text


def observation(body: str) -> str:
    """Wrap an observation body as Search-R1 does: ``\\n\\n<information>{body}</information>\\n\\n``."""
    return OBSERVATION_TEMPLATE.format(body=body)


def search_failed(reason: str) -> str:
    """Observation body for a failed search."""
    return SEARCH_FAILED_TEMPLATE.format(reason=reason)
