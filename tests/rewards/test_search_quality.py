"""Search-quality metrics and failure attribution, each with a hand-worked case."""

from __future__ import annotations

import math

import pytest

from searchr1.retrieval import Passage, format_passages
from searchr1.rewards.search_quality import (
    OUTCOMES,
    answer_in_retrieved,
    assess,
    block_titles,
    gold_titles,
    redundant_searches,
    repetition_score,
    retrieved_blocks,
    summarize,
    think_texts,
    title_recall,
)
from searchr1.rollout import Trajectory

ED = Passage.from_contents("0", '"Ed Wood (film)"\nEd Wood is a 1994 film by Tim Burton.')
SCOTT = Passage("1", "Scott Derrickson", "Scott Derrickson is an American director.")


def _obs(*passages: Passage) -> str:
    return f"\n\n<information>{format_passages(passages).strip()}</information>\n\n"


def _traj(turns: list[str], observations: list[str], mask_tokens: int = 12) -> Trajectory:
    """A trajectory whose i-th policy turn is followed by the i-th observation (as the engine appends them)."""
    traj = Trajectory(prompt_ids=[1, 2])
    text = ""
    for i, turn in enumerate(turns):
        text += turn + (observations[i] if i < len(observations) else "")
    traj.response_text = text
    traj.policy_texts = list(turns)
    traj.queries = [t.split("<search>")[1].split("</search>")[0].strip() for t in turns if "<search>" in t]
    traj.num_searches = len(traj.queries)
    traj.num_turns = len(turns)
    traj.loss_mask = [1] * mask_tokens + [0] * 5
    return traj


def test_gold_titles_from_each_metadata_kind() -> None:
    assert gold_titles({"supporting_titles": ["A", "B", "A"]}) == ["A", "B"]
    assert gold_titles({"supporting_facts": [["A", 0], ["B", 2], ["A", 1]]}) == ["A", "B"]
    assert gold_titles({"supporting_facts": {"title": ["X", "Y"], "sent_id": [0, 1]}}) == ["X", "Y"]
    assert gold_titles({"kind": "born", "hops": 1, "entity": "Dalur Biden"}) == ["Dalur Biden"]
    assert gold_titles({"gold_titles": ["P"], "entity": "Q"}) == ["P"]
    assert gold_titles({"type": "bridge"}) == []


def test_answer_in_retrieved_normalises_like_em() -> None:
    # case, punctuation and articles do not matter: "TIM BURTON." -> "tim burton", in the block's normalised text
    block = format_passages([ED])
    assert answer_in_retrieved([block], ["TIM BURTON."])
    assert answer_in_retrieved([block], ["the 1994 film"])  # article dropped: "1994 film" is in the block
    assert not answer_in_retrieved([block], ["Johnny Depp"])
    assert not answer_in_retrieved([], ["Tim Burton"])
    assert not answer_in_retrieved([block], ["the"])  # an answer that normalises to nothing matches nothing


def test_block_titles_and_title_recall() -> None:
    block = format_passages([ED, SCOTT])
    assert block_titles(block) == ["Ed Wood (film)", "Scott Derrickson"]
    # 1 of 2 gold titles shown: 0.5; "Ed Wood" alone is not the title "Ed Wood (film)"
    assert title_recall(block, ["Scott Derrickson", "Ed Wood"]) == 0.5
    assert title_recall(block, ["Scott Derrickson", "Ed Wood (film)"]) == 1.0
    with pytest.raises(ValueError, match="at least one gold title"):
        title_recall(block, [])


def test_redundant_searches_exact_and_near() -> None:
    # q2 repeats q1 up to case/punctuation/articles; q3 shares 4 words with q1 of 6 distinct in both (Jaccard 0.67);
    # q4 "job" shares none
    queries = ["Where was Dalur Biden born", "where was the Dalur Biden born?", "Where was Dalur Biden raised", "job"]
    assert redundant_searches(queries) == 1  # 0.67 < 0.8: q3 counts only with near=0.6
    assert redundant_searches(queries, near=0.6) == 2
    assert redundant_searches([]) == 0 and redundant_searches(["a b", "c d"]) == 0


def test_think_texts_and_repetition_score() -> None:
    assert think_texts(["<think> find him </think>\n<search> x </search>", "<think> loop loop"]) == [
        " find him ",
        " loop loop",
    ]
    assert repetition_score("a b c d") == 0.0  # trigrams abc, bcd: all distinct
    # "a b a b a b": trigrams aba, bab, aba, bab -> 2 distinct of 4 -> 1 - 2/4 = 0.5
    assert repetition_score("a b a b a b") == 0.5
    assert repetition_score("a b") == 0.0


def test_retrieved_blocks_skip_blocks_the_policy_wrote() -> None:
    fake = "<think> x </think><information>Tim Burton</information>"
    traj = _traj([fake + "<search> Ed Wood </search>"], [_obs(SCOTT)])
    assert retrieved_blocks(traj.response_text, traj.policy_texts) == [format_passages([SCOTT]).strip()]
    # so the policy writing the answer into a fake block does not count as retrieved
    assert not assess(traj, ["Tim Burton"], False).answer_in_retrieved


def test_each_failure_class_and_the_metrics_of_one_trajectory() -> None:
    search = "<think> who directed it </think>\n<search> Ed Wood director </search>"
    answer = "<think> read it </think>\n<answer> {} </answer>"
    golds = ["Tim Burton"]
    correct = assess(_traj([search, answer.format("Tim Burton")], [_obs(ED)]), golds, True, ["Ed Wood (film)"])
    misread = assess(_traj([search, answer.format("Johnny Depp")], [_obs(ED)]), golds, False, ["Ed Wood (film)"])
    not_retrieved = assess(_traj([search, answer.format("Johnny Depp")], [_obs(SCOTT)]), golds, False, ["X", "Y"])
    never = assess(_traj([answer.format("Johnny Depp")], []), golds, False, ["Ed Wood (film)"])
    assert [q.outcome for q in (correct, never, not_retrieved, misread)] == list(OUTCOMES)
    assert (correct.answer_in_retrieved, misread.answer_in_retrieved) == (True, True)
    assert (not_retrieved.answer_in_retrieved, never.answer_in_retrieved) == (False, False)
    # one search showing the gold title: recall 1; no gold title shown: 0; no search: None
    assert (correct.gold_recall, not_retrieved.gold_recall, never.gold_recall) == (1.0, 0.0, None)
    # query "Ed Wood director": 3 words; think words: "who directed it" 3 + "read it" 2 = 5; 12 sampled tokens / 2 turns
    assert (correct.searches, correct.query_words, correct.think_words, correct.tokens_per_turn) == (1, 3.0, 5, 6.0)
    assert never.query_words is None and never.redundant_searches == 0


def test_prompt_context_counts_as_retrieved_and_searched() -> None:
    traj = _traj(["<answer> Johnny Depp </answer>"], [])
    quality = assess(traj, ["Tim Burton"], False, context=[ED.contents])
    assert (quality.outcome, quality.answer_in_retrieved) == ("misread", True)


def test_summarize_shares_sum_to_one_with_em() -> None:
    search = "<search> q </search>"
    golds = ["Tim Burton"]
    qualities = [
        assess(_traj([search, "<answer> Tim Burton </answer>"], [_obs(ED)]), golds, True),
        assess(_traj([search, "<answer> no </answer>"], [_obs(ED)]), golds, False),
        assess(_traj([search, search, "<answer> no </answer>"], [_obs(SCOTT), _obs(SCOTT)]), golds, False),
        assess(_traj(["<answer> no </answer>"], []), golds, False),
    ]
    s = summarize(qualities)
    # outcomes: correct, misread, not_retrieved, never_searched -> 1/4 each; answer retrieved in 2 of 4
    assert s["answer_in_retrieved"] == 0.5
    assert (s["failure_never_searched"], s["failure_not_retrieved"], s["failure_misread"]) == (0.25, 0.25, 0.25)
    em = 0.25
    assert em + s["failure_never_searched"] + s["failure_not_retrieved"] + s["failure_misread"] == 1.0
    # searches: correct 1; wrong (1 + 2 + 0) / 3 = 1; the repeated "q" is one redundant search in 4 trajectories
    assert (s["searches_correct"], s["searches_wrong"], s["redundant_searches"]) == (1.0, 1.0, 0.25)
    assert math.isnan(s["gold_recall"])  # no gold titles given
    with pytest.raises(ValueError, match="at least one"):
        summarize([])
