"""Text protocols between the policy and the search environment, resolved by name with :func:`get_protocol`.

* ``search_r1`` (:mod:`searchr1.protocols.search_r1`): Search-R1's ``<search>``/``<information>``/``<answer>``
  tags, byte for byte; its functions and texts are re-exported here (the default protocol).
* ``tool_call`` (:mod:`searchr1.protocols.tool_call`): the model's native tool calling through its chat template
  (a ``search`` tool; ``<tool_call>`` blocks; results as ``tool`` messages).

Both read the answer from the last ``<answer>…</answer>`` the policy sampled, so rewards and evaluation are shared.
"""

from searchr1.protocols import tool_call
from searchr1.protocols.base import PROTOCOLS, Protocol, Renderer
from searchr1.protocols.search_r1 import (
    INSTRUCTION_TEMPLATE,
    INVALID_ACTION_TEXT,
    NO_RESULTS_TEXT,
    OBSERVATION_TEMPLATE,
    SEARCH_FAILED_TEMPLATE,
    STOP_STRINGS,
    Action,
    answer_of_segments,
    build_prompt,
    extract_answer,
    information_blocks,
    instruction,
    normalize_question,
    observation,
    parse_action,
    question_from_prompt,
    question_in_prompt,
    search_failed,
)


def get_protocol(protocol: str | Protocol) -> Protocol:
    """Resolve a protocol by registered name (unknown names list the valid ones) or pass a Protocol through.

    The built-in protocols registered themselves when this package was imported.
    """
    if isinstance(protocol, Protocol):
        return protocol
    return PROTOCOLS.get(protocol)


__all__ = [
    "PROTOCOLS",
    "Protocol",
    "Renderer",
    "get_protocol",
    "tool_call",
    "INSTRUCTION_TEMPLATE",
    "INVALID_ACTION_TEXT",
    "NO_RESULTS_TEXT",
    "OBSERVATION_TEMPLATE",
    "SEARCH_FAILED_TEMPLATE",
    "STOP_STRINGS",
    "Action",
    "answer_of_segments",
    "build_prompt",
    "extract_answer",
    "information_blocks",
    "instruction",
    "normalize_question",
    "observation",
    "parse_action",
    "question_from_prompt",
    "question_in_prompt",
    "search_failed",
]
