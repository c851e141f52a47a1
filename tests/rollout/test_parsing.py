"""Action parsing: Search-R1's first-match rule, malformed output, and a fuzz test that it never raises."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from searchr1.rollout import Action, extract_answer, parse_action


def test_first_action_decides() -> None:
    assert parse_action("<think> x </think><search> Ed Wood </search>") == Action("search", "Ed Wood")
    assert parse_action("<answer> Paris </answer><search> q </search>") == Action("answer", "Paris")
    assert parse_action("<search> q </search><answer> Paris </answer>") == Action("search", "q")
    # an unclosed answer does not hide a later complete search (regex backtracks to the next opener)
    assert parse_action("<answer> maybe <search> q </search>") == Action("search", "q")
    assert parse_action("<search>\nmulti\nline\n</search>") == Action("search", "multi\nline")


def test_malformed_output_is_invalid_or_repaired() -> None:
    assert parse_action("no tags at all") == Action("invalid")
    assert parse_action("<search> unclosed") == Action("invalid")
    assert parse_action("<search>   </search>") == Action("invalid")  # empty query
    assert parse_action("<search> a <search> b </search>") == Action("search", "b")  # nested -> innermost
    assert parse_action("</search> <search>") == Action("invalid")
    assert parse_action("<answer></answer>") == Action("answer", "")
    assert parse_action("") == Action("invalid")


def test_extract_answer_takes_the_last() -> None:
    assert extract_answer("<answer> a </answer> then <answer> b </answer>") == "b"
    assert extract_answer("<answer> open") is None


TAGGY = st.lists(
    st.sampled_from(["<search>", "</search>", "<answer>", "</answer>", "<information>", "<", ">", "/", " ", "q"])
    | st.text(max_size=5),
    max_size=30,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(TAGGY)
def test_parser_never_raises(text: str) -> None:
    action = parse_action(text)
    assert action.kind in ("search", "answer", "invalid")
    if action.kind == "search":
        assert action.content and action.content == action.content.strip()
    extract_answer(text)
