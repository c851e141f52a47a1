"""Rewards against Search-R1's own numbers: policy-only answers (issue 17 item 1) and v0.3 ``qa_em_format``.

The expected scores of ``RECORDED`` were produced by running Search-R1 a14dc3a
``verl/utils/reward_score/qa_em_format.compute_score_em`` on ``"<|im_start|>assistant\\n" + response`` with
golden answer ``["Paris"]`` (v0.3 scripts: structure_format_score=0.2, final_format_score=0.1; retrieval_score
0 in the scripts, 0.1 for the bonus column).
"""

from __future__ import annotations

import pytest

from searchr1.protocols import INVALID_ACTION_TEXT, extract_answer, observation
from searchr1.rewards import REWARDS, get_reward, score_trajectory
from searchr1.rollout import RolloutConfig, RolloutEngine, ScriptedBackend, Trajectory

OBS = observation('Doc 1(Title: "Paris") Paris is the capital of France.\n')
THINK_SEARCH = "<think> t </think>\n<search> capital of france </search>"

# name: (response, Search-R1 score with retrieval_score=0, with retrieval_score=0.1)
RECORDED = {
    "valid_correct": ("<think> t </think>\n<answer> Paris </answer>", 1.0, 1.0),
    "valid_search_correct": (THINK_SEARCH + OBS + "<think> ok </think>\n<answer> Paris </answer>", 1.0, 1.0),
    "invalid_correct": ("Sure. <answer> Paris </answer>", 0.8, 0.8),
    "valid_wrong_retrieved": (THINK_SEARCH + OBS + "<think> ok </think>\n<answer> Lyon </answer>", 0.2, 0.3),
    "valid_wrong_not_retrieved": ("<think> t </think>\n<answer> Lyon </answer>", 0.2, 0.2),
    "invalid_wrong": ("<answer> Lyon </answer> trailing", 0.1, 0.1),
    "answer_right_after_information": (THINK_SEARCH + OBS + "<answer> Paris </answer>", 0.8, 0.8),
    "two_answers_last_counts": ("<think> t </think>\n<answer> Lyon </answer><answer> Paris </answer>", 0.8, 0.8),
}


def _policy_only(text: str) -> Trajectory:
    """A trajectory whose response is ``text`` split at its observation, each other part sampled by the policy."""
    traj = Trajectory(prompt_ids=[0], response_text=text)
    traj.policy_texts = [part for part in text.split(OBS)]
    return traj


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_qa_em_format_matches_search_r1_recorded_cases(name: str) -> None:
    response, plain, with_bonus = RECORDED[name]
    v03 = get_reward("qa_em_format", structure_format_score=0.2, final_format_score=0.1, retrieval_score=0.0)
    bonus = get_reward("qa_em_format", structure_format_score=0.2, final_format_score=0.1, retrieval_score=0.1)
    assert v03(_policy_only(response), ["Paris"]) == pytest.approx(plain)
    assert bonus(_policy_only(response), ["Paris"]) == pytest.approx(with_bonus)
    assert bonus(response, ["Paris"]) == pytest.approx(with_bonus)  # a plain string: all of it is the policy's


def test_qa_em_format_is_em_format() -> None:
    assert REWARDS.get("qa_em_format") is REWARDS.get("em_format")


def _scripted(tok, bm25, turns: list[str], **cfg) -> Trajectory:
    backend = ScriptedBackend(turns, tok)
    engine = RolloutEngine(backend, bm25, tok, RolloutConfig(max_prompt_tokens=512, **cfg))
    return engine.generate_for_questions(["Who wrote Tom and Jerry?"]).trajectories[0]


def test_invalid_action_text_is_never_the_answer(tiny_tokenizer, bm25) -> None:
    # two turns without an action: the engine appends the invalid-action text (which holds "<answer> and </answer>")
    traj = _scripted(tiny_tokenizer, bm25, ["I am not sure.", "Still thinking"], max_turns=1)
    assert INVALID_ACTION_TEXT in traj.response_text and traj.answer is None
    assert extract_answer(traj.response_text) == "and"  # what scanning the whole response (Search-R1) reads
    assert traj.policy_texts == ["I am not sure.", "Still thinking"]
    for golds in (["Tom and Jerry"], ["and"]):
        score = score_trajectory(traj, golds)
        assert (score.answer, score.em, score.f1, score.substring) == (None, 0.0, 0.0, 0.0)
        assert get_reward("em")(traj, golds) == 0.0 and get_reward("f1")(traj, golds) == 0.0
    # documented "no answer, invalid structure -> 0" (Search-R1's own function gives final_format_score 0.1 here)
    assert get_reward("em_format")(traj, ["and"]) == 0.0


def test_answer_after_invalid_turn_is_read_from_the_policy_turn(tiny_tokenizer, bm25) -> None:
    traj = _scripted(tiny_tokenizer, bm25, ["hmm", "<answer> Tom and Jerry </answer>"], max_turns=2)
    score = score_trajectory(traj, ["Tom and Jerry"])
    assert (score.answer, score.em, score.f1, score.substring) == ("Tom and Jerry", 1.0, 1.0, 1.0)


def test_observation_text_is_never_the_answer(tiny_tokenizer) -> None:
    class AnswerInDocs:
        def search(self, queries, topk):
            from searchr1.retrieval import Passage

            return [[Passage("1", "T", "the <answer> Paris </answer> page")] for _ in queries]

    traj = _scripted(tiny_tokenizer, AnswerInDocs(), ["<search> capital </search>", "no tags"], max_turns=1)
    assert "<answer> Paris </answer>" in traj.response_text
    assert score_trajectory(traj, ["Paris"]).answer is None


def test_format_reward_structure_reads_the_whole_response(tiny_tokenizer, bm25) -> None:
    turns = ["<think> look </think>\n<search> Tom and Jerry </search>", "<think> ok </think>\n<answer> x </answer>"]
    traj = _scripted(tiny_tokenizer, bm25, turns, max_turns=2, topk=1)
    assert [k for _, _, k in traj.chunks] == ["policy", "observation", "policy"]
    reward = get_reward("em_format", retrieval_score=0.0)
    # valid only with the observation block in between: wrong answer, valid structure -> structure_format_score
    assert reward(traj, ["Hanna-Barbera"]) == pytest.approx(0.2)
    assert reward(traj, ["x"]) == pytest.approx(1.0)
