"""Parse the action of one generated turn (Search-R1's ``postprocess_predictions``).

Search-R1 takes the first match of ``<(search|answer)>(.*?)</\\1>`` (DOTALL) in the turn's text. We do
the same, with two departures that keep malformed output harmless: a search whose content still holds
an opening ``<search>`` (nested/repeated tags) uses the text after the innermost one, and an empty
(whitespace-only) search query is an invalid action instead of an empty search. The parser never
raises on any input text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ACTION = re.compile(r"<(search|answer)>(.*?)</\1>", re.DOTALL)


@dataclass(frozen=True)
class Action:
    """The decision of one turn.

    Attributes:
        kind: ``"search"``, ``"answer"`` or ``"invalid"``.
        content: the stripped query / answer text ('' for invalid actions).
    """

    kind: str
    content: str = ""


def parse_action(text: str) -> Action:
    """Return the first complete ``<search>``/``<answer>`` action in ``text``, else an invalid action."""
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
