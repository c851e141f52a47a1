"""format_passages reproduces Search-R1's ``_passages2string`` byte for byte."""

from __future__ import annotations

from searchr1.retrieval import Passage, format_passages


def test_exact_search_r1_observation_body() -> None:
    quoted = Passage.from_contents("1", '"Ed Wood (film)"\nEd Wood is a 1994 film.', score=3.0)
    unquoted = Passage.from_contents("2", "Evan Morris\nEvan Morris was a lobbyist.\nSecond line.")
    # Search-R1: title = contents.split("\n")[0] (quotes kept), text = "\n".join(rest)
    expected = (
        'Doc 1(Title: "Ed Wood (film)") Ed Wood is a 1994 film.\n'
        "Doc 2(Title: Evan Morris) Evan Morris was a lobbyist.\nSecond line.\n"
    )
    assert format_passages([quoted, unquoted]) == expected
    assert quoted.title == "Ed Wood (film)" and unquoted.title == "Evan Morris"


def test_hand_built_passage_and_empty() -> None:
    assert format_passages([Passage(id="x", title="T", text="body")]) == "Doc 1(Title: T) body\n"
    assert format_passages([]) == ""
