"""Text protocols between the policy and the search environment.

``search_r1`` (Search-R1's ``<search>``/``<information>``/``<answer>`` tags) is the one protocol today; its
tags, prompt, stop strings, inserted texts, action parser and answer extraction live in
:mod:`searchr1.protocols.search_r1` and are re-exported here.
"""

from searchr1.protocols.search_r1 import (
    ANSWER_TAGS,
    INFORMATION_TAGS,
    INSTRUCTION_TEMPLATE,
    INVALID_ACTION_TEXT,
    OBSERVATION_TEMPLATE,
    SEARCH_FAILED_TEMPLATE,
    SEARCH_TAGS,
    STOP_STRINGS,
    THINK_TAGS,
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

__all__ = [
    "ANSWER_TAGS",
    "INFORMATION_TAGS",
    "INSTRUCTION_TEMPLATE",
    "INVALID_ACTION_TEXT",
    "OBSERVATION_TEMPLATE",
    "SEARCH_FAILED_TEMPLATE",
    "SEARCH_TAGS",
    "STOP_STRINGS",
    "THINK_TAGS",
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
