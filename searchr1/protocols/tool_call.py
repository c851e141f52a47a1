"""The ``tool_call`` protocol: the model's native tool calling through its chat template (Qwen2.5 / Qwen3 / Hermes).

* The prompt is the chat template rendered with one ``search`` tool schema (:data:`SEARCH_TOOL`) and an
  instruction that asks for the final answer inside ``<answer>…</answer>``, so that answers, rewards and
  evaluation are the ones of the ``search_r1`` protocol.
* A turn stops at ``</tool_call>`` (or the model's EOS). The first of ``<tool_call>`` and a complete
  ``<answer>…</answer>`` decides the turn: a well-formed call to ``search`` with a ``query`` string is a search;
  an unclosed call, malformed JSON, an unknown tool or a missing query is an invalid action whose message says
  which; a turn with neither is invalid too.
* After a search the observation is the chat template's own rendering of a ``tool`` message holding the
  formatted passages, appended as the exact ids of the template's delta: the conversation is rendered with and
  without that message and the suffix after the sampled ``</tool_call>`` is taken (it holds the end of the
  assistant turn, the tool message and the next assistant header). Invalid actions get the same treatment, their
  message as the tool content. Earlier turns are never re-rendered, so a template that strips old ``<think>``
  blocks (Qwen3) cannot rewrite what the policy sampled: ``<think>`` blocks stay exactly as sampled.
* :meth:`ToolCallProtocol.bind` checks once per tokenizer that rendering a conversation with one more tool message
  only appends text (the prefix is stable) and that the delta starts on a token boundary, and refuses the
  tokenizer with a clear error where either fails.

Departures from the template's own generation: the ``<|im_end|>``-like tokens that close an assistant turn after
``</tool_call>`` are inserted (loss mask 0), not sampled, because the turn stops at ``</tool_call>``.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

from searchr1.errors import UserError
from searchr1.protocols.base import PROTOCOLS, Action, Protocol, Renderer
from searchr1.protocols.search_r1 import ANSWER_TAGS, THINK_TAGS, normalize_question

NAME = "tool_call"
"""Name of this protocol in :data:`~searchr1.protocols.PROTOCOLS`."""

TOOL_NAME = "search"
CALL_TAGS = ("<tool_call>", "</tool_call>")
STOP_STRINGS = (CALL_TAGS[1],)
"""A generation turn ends right after a closing ``</tool_call>`` (an answer turn ends with the model's EOS)."""

SEARCH_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": "Search a knowledge source and return the top passages for a query.",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string", "description": "The search query."}},
            "required": ["query"],
        },
    },
}
"""The one tool schema given to the chat template (``tools=[SEARCH_TOOL]``)."""

TOOL_INSTRUCTION_TEMPLATE = (
    "Answer the given question. "
    "You must conduct reasoning first every time you get new information. "
    "After reasoning, if you find you lack some knowledge, you can call the search tool with a query "
    "and it will return the top searched results. "
    "You can search as many times as your want. "
    "If you find no further external knowledge needed, you can directly provide the answer inside <answer> and "
    "</answer>, without detailed illustrations. For example, <answer> Beijing </answer>. Question: {question}\n"
)
"""The user message of the prompt; ``{question}`` is the normalised question."""

INVALID_CALL_TEMPLATE = (
    "Invalid action: {reason}. "
    "To search, call the search tool: "
    '<tool_call>\n{{"name": "search", "arguments": {{"query": "..."}}}}\n</tool_call>. '
    "To give the final answer, put it between <answer> and </answer>."
)
"""Tool-message content after an invalid action; ``{reason}`` says what was wrong."""

NO_RESULTS_TEXT = "No results found for this query."
"""Tool-message content of a search that returned no passage (an empty tool message would read as a broken tool)."""


_TOOL_RESPONSE = re.compile(r"<tool_response>\n?(.*?)\n?</tool_response>", re.DOTALL)


def _call_of(payload: str) -> Action:
    """The action of the JSON between ``<tool_call>`` and ``</tool_call>``."""
    try:
        call = json.loads(payload)
    except json.JSONDecodeError as err:
        return Action("invalid", reason=f"malformed JSON in the tool call ({err.msg} at character {err.pos})")
    if not isinstance(call, dict):
        return Action("invalid", reason='the tool call must be a JSON object with "name" and "arguments"')
    name = call.get("name")
    if name != TOOL_NAME:
        what = "has no tool name" if name is None else f"calls an unknown tool {name!r}"
        return Action("invalid", reason=f"the tool call {what}; the only tool is {TOOL_NAME!r}")
    args = call.get("arguments", {})
    if isinstance(args, str):  # some models send the arguments as a JSON string
        with contextlib.suppress(json.JSONDecodeError):
            args = json.loads(args)
    if not isinstance(args, dict):
        return Action("invalid", reason='the "arguments" of the search call must be a JSON object')
    query = args.get("query")
    if not isinstance(query, str) or not query.strip():
        what = "has no" if query is None else "has an empty or non-string"
        return Action("invalid", reason=f'the search call {what} "query" argument')
    return Action("search", query.strip())


def parse_action(text: str) -> Action:
    """The action of one turn: the first of a ``<tool_call>`` block and a complete ``<answer>…</answer>``.

    Never raises on any input text.
    """
    start = text.find(CALL_TAGS[0])
    opened = text.find(ANSWER_TAGS[0])
    closed = text.find(ANSWER_TAGS[1], opened + len(ANSWER_TAGS[0])) if opened >= 0 else -1
    if closed >= 0 and (start < 0 or opened < start):
        return Action("answer", text[opened + len(ANSWER_TAGS[0]) : closed].strip())
    if start < 0:
        return Action("invalid", reason="the turn has neither a tool call nor an answer")
    end = text.find(CALL_TAGS[1], start)
    if end < 0:
        return Action("invalid", reason=f"the tool call is not closed with {CALL_TAGS[1]}")
    return _call_of(text[start + len(CALL_TAGS[0]) : end].strip())


def instruction(question: str) -> str:
    """The user message for ``question`` (no chat template)."""
    return TOOL_INSTRUCTION_TEMPLATE.format(question=normalize_question(question))


def _require_template(tokenizer: Any | None) -> None:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "the tool_call protocol renders prompts and tool messages with the tokenizer's chat template, and this "
            "tokenizer has none; use an instruct/chat model whose template supports tools, or protocol=search_r1"
        )


def build_prompt(question: str, tokenizer: Any | None = None, use_chat_template: bool = True) -> str:
    """The chat template rendered with :data:`SEARCH_TOOL` and the instruction as one user message."""
    if not use_chat_template:
        raise ValueError(
            "the tool_call protocol needs the chat template; drop use_chat_template=False (or --no-chat-"
            "template), or use protocol=search_r1 for raw prompts"
        )
    _require_template(tokenizer)
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": instruction(question)}],
        tools=[SEARCH_TOOL],
        tokenize=False,
        add_generation_prompt=True,
    )


_BASE = [
    {"role": "user", "content": "probe question"},
    {
        "role": "assistant",
        # reasoning keeps Qwen3-style templates from rendering the last assistant message differently
        "content": "<think>\nprobe reasoning\n</think>\n\n",
        "tool_calls": [{"type": "function", "function": {"name": TOOL_NAME, "arguments": {"query": "probe"}}}],
    },
]
"""The conversation the tool-message delta is measured on (a user turn, then an assistant tool call)."""


class ToolCallRenderer(Renderer):
    """Tool messages as the exact ids of the chat template's delta, checked once for this tokenizer.

    Args:
        tokenizer: a Hugging Face tokenizer whose chat template renders tools, assistant tool calls and
            ``tool`` messages.

    Raises:
        ValueError: no chat template; the template does not render tool calls or tool messages; adding a tool
            message re-renders earlier text; or the delta does not start on a token boundary.
    """

    def __init__(self, tokenizer: Any) -> None:
        _require_template(tokenizer)
        self.tokenizer = tokenizer
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        head = self._render(_BASE, add_generation_prompt=False)
        stop = head.rfind(CALL_TAGS[1])
        if stop < 0:  # a user error (a ValueError): the console prints it in one line, no traceback
            raise UserError(
                f"the chat template of {name!r} does not render assistant tool calls as {CALL_TAGS[0]}…{CALL_TAGS[1]}"
                "; the tool_call protocol needs a Hermes/Qwen-style tool-calling template: give one with "
                "model.chat_template / --chat-template (pkg:assets/chat_templates/chatml_tools.jinja for ChatML "
                "models), or use protocol=search_r1"
            )
        self._prefix = head[: stop + len(CALL_TAGS[1])]
        probe = "probe passages 1994"
        full = self._render([*_BASE, self._tool(probe)], add_generation_prompt=True)
        if not full.startswith(head):
            at = next((i for i, (a, b) in enumerate(zip(head, full)) if a != b), min(len(head), len(full)))
            raise ValueError(
                f"the chat template of {name!r} re-renders earlier turns when a tool message is added (the prefix is "
                f"not stable: the renderings differ from character {at}: {head[at : at + 40]!r} vs "
                f"{full[at : at + 40]!r}); the tool_call protocol appends tool messages without re-rendering history, "
                "so it needs a template whose rendering of a conversation extends that of its prefixes"
            )
        delta = full[len(self._prefix) :]
        if probe not in delta:
            raise ValueError(f"the chat template of {name!r} does not render the content of 'tool' messages")
        if self._encode(self._prefix) + self._encode(delta) != self._encode(full):
            raise ValueError(
                f"with the tokenizer of {name!r}, the ids of the tool-message delta differ from the ids of the whole "
                f"rendered conversation (the delta after {CALL_TAGS[1]} does not start on a token boundary)"
            )
        self._overhead = len(self._delta_ids(""))

    def _render(self, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tools=[SEARCH_TOOL], tokenize=False, add_generation_prompt=add_generation_prompt
        )

    @staticmethod
    def _tool(content: str) -> dict[str, Any]:
        return {"role": "tool", "name": TOOL_NAME, "content": content}

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _delta_ids(self, content: str) -> list[int]:
        """Ids the template adds after ``</tool_call>`` for one tool message holding ``content``."""
        full = self._render([*_BASE, self._tool(content)], add_generation_prompt=True)
        if not full.startswith(self._prefix):
            raise ValueError("the chat template re-rendered earlier turns for this tool message (prefix not stable)")
        return self._encode(full[len(self._prefix) :])

    def observation_ids(self, body: str, max_tokens: int) -> list[int]:
        """The tool message holding ``body.strip()``; a long body is shortened so the template's closing survives."""
        if max_tokens <= self._overhead:
            raise ValueError(
                f"max_obs_tokens={max_tokens} leaves no room for passages: the chat template's tool message takes "
                f"{self._overhead} tokens by itself; raise max_obs_tokens"
            )
        body = body.strip()
        ids = self._delta_ids(body)
        if len(ids) > max_tokens:
            keep = max(max_tokens - self._overhead - 1, 0)
            ids = self._delta_ids(self.tokenizer.decode(self._encode(body)[:keep]))[:max_tokens]
        return ids

    def invalid_ids(self, action: Action) -> list[int]:
        """A tool message saying what was wrong (:data:`INVALID_CALL_TEMPLATE`)."""
        return self._delta_ids(INVALID_CALL_TEMPLATE.format(reason=action.reason or "invalid action"))


class ToolCallProtocol(Protocol):
    """Native tool calling through the chat template (the functions of this module as one protocol object)."""

    name = NAME
    stop_strings = STOP_STRINGS
    no_results_text = NO_RESULTS_TEXT

    build_prompt = staticmethod(build_prompt)  # the module's functions (see their docstrings)
    parse_action = staticmethod(parse_action)

    def write_turn(self, thought: str, action: Action) -> str:
        """``<think> thought </think>`` then a Hermes-style ``search`` call or ``<answer> a </answer>``."""
        head = f"{THINK_TAGS[0]} {thought} {THINK_TAGS[1]}\n"
        if action.kind == "search":
            call = json.dumps({"name": TOOL_NAME, "arguments": {"query": action.content}}, ensure_ascii=False)
            return f"{head}{CALL_TAGS[0]}\n{call}\n{CALL_TAGS[1]}"
        if action.kind == "answer":
            return f"{head}{ANSWER_TAGS[0]} {action.content} {ANSWER_TAGS[1]}"
        raise ValueError(f"write_turn writes search or answer turns, got {action.kind!r}")

    def observation_blocks(self, text: str) -> list[str]:
        """Contents of every ``<tool_response>…</tool_response>`` of ``text``."""
        return _TOOL_RESPONSE.findall(text)

    def tokenizer_texts(self) -> list[str]:
        """The tool schema, the tool-prompt lines, the instruction, the invalid-call message and a tool response."""
        return [
            json.dumps(SEARCH_TOOL),
            "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided "
            "with function signatures within <tools></tools> XML tags:\n<tools>\n</tools>\n\nFor each function "
            "call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:",
            TOOL_INSTRUCTION_TEMPLATE,
            INVALID_CALL_TEMPLATE,
            'user\n<tool_response>\nDoc 1(Title: "X") x\n</tool_response>\n',
        ]

    def bind(self, tokenizer: Any) -> ToolCallRenderer:
        """Check ``tokenizer``'s chat template and render tool messages with it."""
        return ToolCallRenderer(tokenizer)


PROTOCOLS.register(NAME)(ToolCallProtocol())
