"""Search-R1's text protocol: the only home of its tags, prompt, stop strings, inserted texts and parsers.

Everything here is the text contract between the policy and the environment of Search-R1 (a14dc3a):

* the instruction is ``make_prefix`` of ``scripts/data_process/qa_search_train_merge.py`` (``base`` template),
  applied through the tokenizer's chat template as one user message whenever the tokenizer has one (what verl's
  ``RLHFDataset`` does with the parquet's ``prompt`` messages);
* a turn stops at ``</search>`` or ``</answer>``; the action is the first ``<(search|answer)>(.*?)</\\1>``
  (``postprocess_predictions``);
* an observation is ``\\n\\n<information>{body.strip()}</information>\\n\\n`` and the invalid-action text is
  appended after a turn without an action (``execute_predictions``), both byte for byte.

Departures (deliberate): a search whose content still holds an opening ``<search>`` uses the text after the
innermost one and an empty search is an invalid action (Search-R1 sends an empty query); a failed search is shown
as ``Search failed: <reason>`` inside ``<information>`` (Search-R1 crashes the step), a search that found nothing
as :data:`NO_RESULTS_TEXT` (Search-R1: an empty ``<information></information>``); the answer is the last
``<answer>`` of the text the policy *sampled* (:func:`answer_of_segments`), never of inserted text -- Search-R1's
``extract_solution`` scans prompt + response and so reads the prompt's own ``<answer> Beijing </answer>`` and the
invalid-action text's ``<answer> and </answer>`` as answers of a trajectory that never answered.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from searchr1.protocols.base import PROTOCOLS, Action, Protocol, Renderer

NAME = "search_r1"
"""Name of this protocol in :data:`~searchr1.protocols.PROTOCOLS`."""

SEARCH_TAGS = ("<search>", "</search>")
ANSWER_TAGS = ("<answer>", "</answer>")
THINK_TAGS = ("<think>", "</think>")

STOP_STRINGS = (SEARCH_TAGS[1], ANSWER_TAGS[1])
"""A generation turn ends right after either closing tag."""

INSTRUCTION_TEMPLATE = (
    "Answer the given question. "
    "You must conduct reasoning inside <think> and </think> first every time you get new information. "
    "After reasoning, if you find you lack some knowledge, you can call a search engine by <search> query </search> "
    "and it will return the top searched results between <information> and </information>. "
    "You can search as many times as your want. "
    "If you find no further external knowledge needed, you can directly provide the answer inside <answer> and "
    "</answer>, without detailed illustrations. For example, <answer> Beijing </answer>. Question: {question}\n"
)
"""Search-R1's instruction prefix; ``{question}`` is the normalised question."""

INVALID_ACTION_TEXT = (
    "\nMy previous action is invalid. "
    "If I want to search, I should put the query between <search> and </search>. "
    "If I want to give the final answer, I should put the answer between <answer> and </answer>. "
    "Let me try again.\n"
)
"""Appended (loss-masked) after a turn that contains neither a search nor an answer action."""

OBSERVATION_TEMPLATE = "\n\n<information>{body}</information>\n\n"
"""Wraps the stripped observation body of one search (see :func:`observation`)."""

SEARCH_FAILED_TEMPLATE = "Search failed: {reason}"
"""Observation body when the retriever raised after its retries."""

NO_RESULTS_TEXT = "No results found."
"""Observation body of a search that returned no passage. Search-R1 shows an empty ``<information></information>``
there (its pyserini BM25 server answers ``[]`` for a query without any indexed term); saying so is clearer."""

_ACTION = re.compile(r"<(search|answer)>(.*?)</\1>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_INFORMATION = re.compile(r"<information>(.*?)</information>", re.DOTALL)
_QUESTION = re.compile(r"Question: (.*?)\n")


def normalize_question(question: str) -> str:
    """Strip whitespace and add a trailing ``?`` when missing (as Search-R1's data scripts do)."""
    question = question.strip()
    if not question.endswith("?"):
        question += "?"
    return question


def instruction(question: str) -> str:
    """The raw Search-R1 instruction for ``question`` (no chat template)."""
    return INSTRUCTION_TEMPLATE.format(question=normalize_question(question))


def question_in_prompt(prompt: str) -> tuple[str | None, str]:
    """The (normalised) question of a built prompt, the text after the first ``Question: `` up to the newline, and
    what follows it in ``prompt`` (``(None, "")`` when there is no question)."""
    match = _QUESTION.search(prompt)
    return (None, "") if match is None else (match.group(1), prompt[match.end() :])


def question_from_prompt(text: str) -> str:
    """The question of a Search-R1 instruction (a parquet ``prompt`` message): the text after the last
    ``Question:``, stripped ('' when there is none)."""
    _, sep, tail = text.rpartition("Question:")
    return tail.strip() if sep else ""


def build_prompt(question: str, tokenizer: Any | None = None, use_chat_template: bool = True) -> str:
    """Build the policy prompt for one question.

    Args:
        question: the question text.
        tokenizer: a Hugging Face tokenizer; when it has a ``chat_template`` and ``use_chat_template``
            is True, the instruction is sent as one user message with ``add_generation_prompt=True``.
        use_chat_template: set False to send the raw instruction even when the tokenizer has a template.

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
    """Wrap an observation body as Search-R1 does: ``\\n\\n<information>{body.strip()}</information>\\n\\n``."""
    return OBSERVATION_TEMPLATE.format(body=body.strip())


def search_failed(reason: str) -> str:
    """Observation body for a failed search."""
    return SEARCH_FAILED_TEMPLATE.format(reason=reason)


def parse_action(text: str) -> Action:
    """Return the first complete ``<search>``/``<answer>`` action in one turn's text, else an invalid action.

    Never raises on any input text.
    """
    match = _ACTION.search(text)
    if match is None:
        return Action("invalid")
    kind, content = match.group(1), match.group(2)
    opener = f"<{kind}>"
    if opener in content:
        content = content.rsplit(opener, 1)[1]
    content = content.strip()
    if kind == "search" and not content:
        return Action("invalid")
    return Action(kind, content)


def extract_answer(text: str) -> str | None:
    """The stripped content of the last ``<answer>…</answer>`` in ``text``, or None if there is none."""
    matches = _ANSWER.findall(text)
    return matches[-1].strip() if matches else None


def answer_of_segments(segments: Iterable[str]) -> str | None:
    """The answer of a trajectory from the texts the policy sampled, one per turn.

    The last ``<answer>…</answer>`` found inside any single segment (a tag pair is never joined across an
    inserted observation), or None.
    """
    answer = None
    for segment in segments:
        found = extract_answer(segment)
        if found is not None:
            answer = found
    return answer


def information_blocks(text: str) -> list[str]:
    """Contents of every ``<information>…</information>`` block of ``text``."""
    return _INFORMATION.findall(text)


class SearchR1Renderer(Renderer):
    """Search-R1's inserted texts as ids: observations and the invalid-action text, tokenized once each.

    Args:
        tokenizer: the policy's Hugging Face tokenizer.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._invalid = self._encode(INVALID_ACTION_TEXT)
        self._overhead = len(self._encode(observation("")))

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def observation_ids(self, body: str, max_tokens: int) -> list[int]:
        """``<information>body</information>`` as ids; a long body is shortened so the closing tag survives."""
        ids = self._encode(observation(body))
        if len(ids) > max_tokens:
            keep = max(max_tokens - self._overhead - 1, 0)
            body = self.tokenizer.decode(self._encode(body)[:keep])
            ids = self._encode(observation(body))[:max_tokens]
        return ids

    def invalid_ids(self, action: Action) -> list[int]:
        """:data:`INVALID_ACTION_TEXT` (the same text whatever made the turn invalid, as in Search-R1)."""
        return list(self._invalid)


class SearchR1Protocol(Protocol):
    """Search-R1's tags (the functions of this module as one protocol object)."""

    name = NAME
    stop_strings = STOP_STRINGS
    no_results_text = NO_RESULTS_TEXT

    build_prompt = staticmethod(build_prompt)  # the module's functions (see their docstrings)
    parse_action = staticmethod(parse_action)

    def write_turn(self, thought: str, action: Action) -> str:
        """``<think> thought </think>`` then ``<search> q </search>`` or ``<answer> a </answer>``."""
        if action.kind not in ("search", "answer"):
            raise ValueError(f"write_turn writes search or answer turns, got {action.kind!r}")
        return f"{THINK_TAGS[0]} {thought} {THINK_TAGS[1]}\n<{action.kind}> {action.content} </{action.kind}>"

    def observation_blocks(self, text: str) -> list[str]:
        """See :func:`information_blocks`."""
        return information_blocks(text)

    def tokenizer_texts(self) -> list[str]:
        """The instruction, the invalid-action text and the observation wrapper."""
        return [INSTRUCTION_TEMPLATE, INVALID_ACTION_TEXT, OBSERVATION_TEMPLATE]

    def bind(self, tokenizer: Any) -> SearchR1Renderer:
        """Tokenize the inserted texts for ``tokenizer`` (any tokenizer works)."""
        return SearchR1Renderer(tokenizer)


PROTOCOLS.register(NAME)(SearchR1Protocol())
