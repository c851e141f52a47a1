"""Every engine branch, driven by the scripted backend, with the tiny tokenizer and a real BM25 retriever."""

from __future__ import annotations

import pytest

from searchr1.protocols import INVALID_ACTION_TEXT, build_prompt
from searchr1.retrieval import RetrievalError, format_passages
from searchr1.rollout import RolloutConfig, RolloutEngine, ScriptedBackend
from tests.rollout.conftest import assert_masks_match_text

QUESTIONS = ["Who directed Ed Wood?", "Were Scott Derrickson and Ed Wood of the same nationality"]
SEARCH = "<think> I should look it up. </think>\n<search> Ed Wood film director </search>"


class CountingRetriever:
    """Forwards to a real retriever and records every batched call."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, []

    def search(self, queries: list[str], topk: int):
        self.calls.append(list(queries))
        return self.inner.search(queries, topk)


class DownRetriever:
    """A retriever whose server is down: every call fails after its retries."""

    def search(self, queries: list[str], topk: int):
        raise RetrievalError("connection refused after 3 retries")


def _engine(tok, responses, retriever, **cfg) -> tuple[RolloutEngine, ScriptedBackend]:
    cfg.setdefault("max_prompt_tokens", 512)
    backend = ScriptedBackend(responses, tok)
    return RolloutEngine(backend, retriever, tok, RolloutConfig(**cfg)), backend


def test_search_then_answer_with_real_bm25(tiny_tokenizer, bm25) -> None:
    retriever = CountingRetriever(bm25)
    engine, backend = _engine(
        tiny_tokenizer,
        [
            SEARCH + " trailing text never sampled",
            "<search> Scott Derrickson </search>",
            "<answer> Tim Burton </answer>",
        ]
        + ["<answer> yes </answer>"],
        retriever,
        topk=2,
    )
    batch = engine.generate_for_questions(QUESTIONS)
    a, b = batch.trajectories
    # one batched retriever call for both queries of the first turn
    assert retriever.calls == [["Ed Wood film director", "Scott Derrickson"]]
    # Search-R1's execute_predictions: f"\n\n<information>{body.strip()}</information>\n\n" (no trailing newline
    # of the last "Doc i(...) ...\n" line inside the block)
    body = format_passages(bm25.search(["Ed Wood film director"], 2)[0])
    assert body.endswith("\n")
    expected_obs = "\n\n<information>" + body.strip() + "</information>\n\n"
    assert a.response_text == SEARCH + expected_obs + "<answer> Tim Burton </answer>"
    assert (a.finish_reason, a.answer, a.num_turns, a.num_searches) == ("answer", "Tim Burton", 2, 1)
    assert a.queries == ["Ed Wood film director"] and len(a.doc_ids[0]) == 2
    assert [k for _, _, k in a.chunks] == ["policy", "observation", "policy"]
    assert b.answer == "yes" and b.doc_ids[0] and b.doc_ids[0] != a.doc_ids[0]
    for t in (a, b):
        assert_masks_match_text(tiny_tokenizer, t)
        assert all(lp == -1.0 for lp, m in zip(t.logprobs, t.loss_mask) if m == 1)
    # second turn's prompt is the exact ids of prompt + turn 1 + observation (no re-tokenization)
    assert backend.calls[1][0] == a.prompt_ids + a.response_ids[: a.chunks[1][1]]
    assert (
        a.prompt_ids == tiny_tokenizer(build_prompt(QUESTIONS[0], tiny_tokenizer), add_special_tokens=False).input_ids
    )
    m = batch.metrics()
    assert m["searches_mean"] == 1.0 and m["valid_action_ratio"] == 1.0 and m["finish_answer"] == 1.0


def test_invalid_action_then_answer(tiny_tokenizer, bm25) -> None:
    engine, _ = _engine(tiny_tokenizer, ["I am not sure.", "<search>   </search>", "<answer> x </answer>"], bm25)
    (t,) = engine.generate_for_questions(QUESTIONS[:1]).trajectories
    assert t.invalid_actions == 2 and t.num_searches == 0 and t.finish_reason == "answer"
    assert t.response_text == (
        "I am not sure." + INVALID_ACTION_TEXT + "<search>   </search>" + INVALID_ACTION_TEXT + "<answer> x </answer>"
    )
    assert [k for _, _, k in t.chunks] == ["policy", "invalid", "policy", "invalid", "policy"]
    assert_masks_match_text(tiny_tokenizer, t)


def test_eos_ends_the_trajectory(tiny_tokenizer, bm25) -> None:
    eos = tiny_tokenizer.eos_token
    engine, _ = _engine(tiny_tokenizer, [f"I give up.{eos} ignored after eos"], bm25)
    (t,) = engine.generate_for_questions(QUESTIONS[:1]).trajectories
    assert t.finish_reason == "eos" and t.response_ids[-1] == tiny_tokenizer.eos_token_id
    assert t.response_text == f"I give up.{eos}"


def test_final_turn_does_not_search(tiny_tokenizer, bm25) -> None:
    retriever = CountingRetriever(bm25)
    engine, _ = _engine(tiny_tokenizer, [SEARCH, SEARCH], retriever, max_turns=1)
    (t,) = engine.generate_for_questions(QUESTIONS[:1]).trajectories
    assert len(retriever.calls) == 1 and t.num_searches == 1 and t.num_turns == 2
    assert t.finish_reason == "max_turns" and t.chunks[-1][2] == "policy"  # nothing appended after the final turn
    assert t.response_text.endswith("</information>\n\n" + SEARCH)


def test_max_turns_zero_is_one_final_turn_and_length(tiny_tokenizer, bm25) -> None:
    engine, _ = _engine(tiny_tokenizer, ["word " * 50], bm25, max_turns=0, max_response_tokens=7)
    (t,) = engine.generate_for_questions(QUESTIONS[:1]).trajectories
    assert (t.finish_reason, t.num_turns, len(t.response_ids)) == ("length", 1, 7)


def test_length_in_a_search_turn_is_an_invalid_action(tiny_tokenizer, bm25) -> None:
    engine, _ = _engine(tiny_tokenizer, ["word " * 50, "<answer> a </answer>"], bm25, max_response_tokens=8)
    (t,) = engine.generate_for_questions(QUESTIONS[:1]).trajectories
    assert t.invalid_actions == 1 and t.chunks[0][1] == 8 and t.finish_reason == "answer"


def test_total_cap_truncates_and_keeps_the_trajectory(tiny_tokenizer, bm25) -> None:
    prompt_len = len(tiny_tokenizer(build_prompt(QUESTIONS[0], tiny_tokenizer)).input_ids)
    # the observation does not fit: appended up to the cap, then the trajectory ends
    engine, _ = _engine(
        tiny_tokenizer, [SEARCH, SEARCH], bm25, max_total_tokens=prompt_len + 60, max_prompt_tokens=prompt_len
    )
    batch = engine.generate_for_questions(QUESTIONS[:1] * 2)
    for t in batch.trajectories:
        assert t.finish_reason == "truncated" and t.total_tokens == prompt_len + 60
        assert [k for _, _, k in t.chunks] == ["policy", "observation"]
    assert batch.input_ids.shape == (2, prompt_len + 60)
    # a turn longer than the remaining budget is cut at the cap
    engine, _ = _engine(
        tiny_tokenizer, ["word " * 100], bm25, max_total_tokens=prompt_len + 10, max_prompt_tokens=prompt_len
    )
    (t,) = engine.generate_for_questions(QUESTIONS[:1]).trajectories
    assert t.finish_reason == "truncated" and len(t.response_ids) == 10 and t.loss_mask == [1] * 10


def test_long_observation_keeps_its_closing_tag(tiny_tokenizer, bm25) -> None:
    engine, _ = _engine(tiny_tokenizer, [SEARCH, "<answer> a </answer>"], bm25, max_obs_tokens=40, topk=3)
    (t,) = engine.generate_for_questions(QUESTIONS[:1]).trajectories
    s, e, kind = t.chunks[1]
    obs = tiny_tokenizer.decode(t.response_ids[s:e])
    assert kind == "observation" and e - s <= 40
    assert obs.startswith("\n\n<information>Doc 1(Title:") and obs.endswith("</information>\n\n")
    assert_masks_match_text(tiny_tokenizer, t)


def test_search_failure_is_observed_or_raised(tiny_tokenizer) -> None:
    engine, _ = _engine(tiny_tokenizer, [SEARCH, "<answer> a </answer>"], DownRetriever())
    batch = engine.generate_for_questions(QUESTIONS[:1])
    (t,) = batch.trajectories
    assert "<information>Search failed: connection refused after 3 retries</information>" in t.response_text
    assert t.search_failures == 1 and t.doc_ids == [[]] and batch.metrics()["search_failures"] == 1.0
    assert_masks_match_text(tiny_tokenizer, t)
    engine, _ = _engine(tiny_tokenizer, [SEARCH], DownRetriever(), on_search_error="raise")
    with pytest.raises(RetrievalError, match="connection refused"):
        engine.generate_for_questions(QUESTIONS[:1])


def test_groups_are_consecutive(tiny_tokenizer, bm25) -> None:
    answers = [f"<answer> {i} </answer>" for i in range(6)]
    engine, _ = _engine(tiny_tokenizer, answers, bm25)
    batch = engine.generate_for_questions(QUESTIONS + ["What is BM25?"], n=2)
    assert batch.group_ids.tolist() == [0, 0, 1, 1, 2, 2] == batch.prompt_index.tolist()
    assert [t.answer for t in batch.trajectories] == [str(i) for i in range(6)]
    assert batch.trajectories[0].prompt_ids == batch.trajectories[1].prompt_ids


def test_long_prompt_is_left_truncated_with_a_warning(tiny_tokenizer, bm25) -> None:
    engine, _ = _engine(tiny_tokenizer, ["<answer> a </answer>"], bm25, max_prompt_tokens=20)
    prompt = build_prompt(QUESTIONS[0], tiny_tokenizer)
    with pytest.warns(UserWarning, match="left-truncated"):
        (t,) = engine.generate([prompt]).trajectories
    assert t.prompt_ids == tiny_tokenizer(prompt, add_special_tokens=False).input_ids[-20:]


def test_eos_on_the_final_turn_is_eos_not_max_turns(tiny_tokenizer, bm25) -> None:
    """``direct`` (max_turns=0) and the last turn of a search run: a turn that stops at EOS reports ``eos``."""
    eos = tiny_tokenizer.eos_token
    engine, _ = _engine(tiny_tokenizer, [f"I give up.{eos}"], bm25, max_turns=0)
    (t,) = engine.generate_for_questions(QUESTIONS[:1]).trajectories
    assert (t.finish_reason, t.num_turns) == ("eos", 1)
    engine, _ = _engine(tiny_tokenizer, [SEARCH, f"No idea.{eos}"], bm25, max_turns=1)
    (t,) = engine.generate_for_questions(QUESTIONS[:1]).trajectories
    assert (t.finish_reason, t.num_turns, t.num_searches) == ("eos", 2, 1)
    engine, _ = _engine(tiny_tokenizer, [SEARCH, SEARCH + eos], bm25, max_turns=1)  # a search cut off by the end
    (t,) = engine.generate_for_questions(QUESTIONS[:1]).trajectories
    assert t.finish_reason == "max_turns"
