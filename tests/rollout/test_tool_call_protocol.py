"""The protocol registry and the ``tool_call`` protocol: parsing, the template delta, masks, errors, equal scoring.

Tokenizers are the tiny one built on the fly (its default chat template is the Qwen2.5-style tool template of
``searchr1.models.chat_templates``) and a copy carrying the Qwen3-style template that strips old reasoning; the
backend is the scripted one and the retriever a real BM25 over the HotpotQA sample.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from searchr1.models.chat_templates import QWEN3_TOOLS_TEMPLATE, QWEN25_TOOLS_TEMPLATE
from searchr1.models.tiny import CHATML_TEMPLATE
from searchr1.protocols import Action, get_protocol, search_r1, tool_call
from searchr1.protocols.tool_call import SEARCH_TOOL, TOOL_INSTRUCTION_TEMPLATE
from searchr1.retrieval import format_passages
from searchr1.rewards import score_trajectory
from searchr1.rollout import RolloutConfig, RolloutEngine, ScriptedBackend
from tests.rollout.conftest import token_char_offsets

QUESTION = "Who directed Ed Wood?"
CALL = '<tool_call>\n{"name": "search", "arguments": {"query": "Ed Wood film director"}}\n</tool_call>'
TC = get_protocol("tool_call")


@pytest.fixture(scope="module")
def qwen3_tokenizer(tiny_model_dir):
    """The tiny tokenizer with the Qwen3-style template (old ``<think>`` blocks are stripped when rendering)."""
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = QWEN3_TOOLS_TEMPLATE
    return tok


def _call(payload: str) -> str:
    return f"<tool_call>\n{payload}\n</tool_call>"


def test_acceptance_parse_and_registry() -> None:
    text = '<tool_call>{"name": "search", "arguments": {"query": "Ed Wood"}}</tool_call>'
    assert get_protocol("tool_call").parse_action(text) == Action("search", "Ed Wood")
    with pytest.raises(ValueError, match="valid names: search_r1, tool_call"):
        get_protocol("tools")
    with pytest.raises(ValueError, match="unknown protocol 'tags'; valid names: search_r1, tool_call"):
        RolloutConfig(protocol="tags")
    assert RolloutConfig().protocol == "search_r1"
    assert TC.stop_strings == ("</tool_call>",)


@pytest.mark.parametrize(
    "text",
    [
        "<think> x </think><search> Ed Wood </search>",
        "<answer> Paris </answer><search> q </search>",
        "<search> a <search> b </search>",
        "<search>   </search>",
        "no tags",
        "<answer></answer>",
        "",
    ],
)
def test_search_r1_protocol_is_todays_parser(text: str) -> None:
    assert get_protocol("search_r1").parse_action(text) == search_r1.parse_action(text)


def test_search_r1_protocol_prompt_is_todays_prompt(tiny_tokenizer) -> None:
    proto = get_protocol("search_r1")
    assert proto.stop_strings == ("</search>", "</answer>")
    assert proto.build_prompt(QUESTION, None) == search_r1.instruction(QUESTION)
    # the tiny tokenizer's tool-capable default template renders tool-less chats as the plain ChatML of before
    assert tiny_tokenizer.chat_template == QWEN25_TOOLS_TEMPLATE
    prompt = proto.build_prompt(QUESTION, tiny_tokenizer)
    assert prompt == "<|im_start|>user\n" + search_r1.instruction(QUESTION) + "<|im_end|>\n<|im_start|>assistant\n"
    tiny_tokenizer.chat_template = CHATML_TEMPLATE
    try:
        assert (
            proto.build_prompt(QUESTION, tiny_tokenizer) == prompt == search_r1.build_prompt(QUESTION, tiny_tokenizer)
        )
    finally:
        tiny_tokenizer.chat_template = QWEN25_TOOLS_TEMPLATE


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (_call('{"name": "search", "arguments": {"query": "Ed Wood"'), "malformed JSON in the tool call"),
        (_call("search(Ed Wood)"), "malformed JSON in the tool call"),
        (_call('["search", "Ed Wood"]'), 'must be a JSON object with "name"'),
        (_call('{"name": "lookup", "arguments": {"query": "Ed Wood"}}'), "unknown tool 'lookup'; the only tool is"),
        (_call('{"arguments": {"query": "Ed Wood"}}'), "has no tool name"),
        (_call('{"name": "search", "arguments": {"q": "Ed Wood"}}'), 'has no "query" argument'),
        (_call('{"name": "search"}'), 'has no "query" argument'),
        (_call('{"name": "search", "arguments": {"query": "  "}}'), 'empty or non-string "query"'),
        (_call('{"name": "search", "arguments": {"query": 7}}'), 'empty or non-string "query"'),
        (_call('{"name": "search", "arguments": ["Ed Wood"]}'), '"arguments" of the search call must be'),
        ('<tool_call>\n{"name": "search", "arguments": {"query": "x"}}', "not closed with </tool_call>"),
        ("I think the answer is Tim Burton.", "neither a tool call nor an answer"),
    ],
)
def test_every_invalid_call_says_why(text: str, reason: str) -> None:
    action = tool_call.parse_action(text)
    assert action.kind == "invalid" and action.content == ""
    assert reason in action.reason


def test_valid_calls_and_answers() -> None:
    assert tool_call.parse_action("<think>\nhm\n</think>\n\n" + CALL) == Action("search", "Ed Wood film director")
    # arguments sent as a JSON string are accepted (some models do)
    assert tool_call.parse_action(_call('{"name": "search", "arguments": "{\\"query\\": \\"q\\"}"}')).content == "q"
    assert tool_call.parse_action("<answer> Tim Burton </answer><|im_end|>") == Action("answer", "Tim Burton")
    # the first of a call and a complete answer decides the turn
    assert tool_call.parse_action("<answer> a </answer>" + CALL).kind == "answer"
    assert tool_call.parse_action(CALL + "<answer> a </answer>").kind == "search"
    assert tool_call.parse_action("<answer> open " + CALL).kind == "search"


def test_prompt_is_the_chat_template_with_the_search_tool(tiny_tokenizer) -> None:
    prompt = TC.build_prompt(QUESTION, tiny_tokenizer)
    user = TOOL_INSTRUCTION_TEMPLATE.format(question=QUESTION)
    assert prompt == tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": user}], tools=[SEARCH_TOOL], tokenize=False, add_generation_prompt=True
    )
    assert '"name": "search"' in prompt and '"required": ["query"]' in prompt and "<answer> Beijing </answer>" in prompt
    assert search_r1.question_in_prompt(prompt)[0] == QUESTION  # SFT and evaluation find the question
    with pytest.raises(ValueError, match="needs the chat template"):
        TC.build_prompt(QUESTION, tiny_tokenizer, use_chat_template=False)
    with pytest.raises(ValueError, match="has none"):
        TC.build_prompt(QUESTION, None)


def _conversation(body: str, invalid: str, final: str, reasoning: str) -> list[dict]:
    """The messages of the scripted trajectory below, as a chat-template user would write them."""
    call = {"type": "function", "function": {"name": "search", "arguments": {"query": "Ed Wood film director"}}}
    return [
        {"role": "user", "content": TOOL_INSTRUCTION_TEMPLATE.format(question=QUESTION)},
        {"role": "assistant", "content": reasoning, "tool_calls": [call]},
        {"role": "tool", "name": "search", "content": body},
        {"role": "assistant", "content": _call('{"name": "lookup", "arguments": {"query": "x"}}')},
        {"role": "tool", "name": "search", "content": invalid},
        {"role": "assistant", "content": final},
    ]


def _inserted_spans(text: str) -> list[tuple[int, int]]:
    """Character spans that the policy did not sample: from the ``<|im_end|>`` closing an assistant tool turn to
    the next assistant header, both included."""
    spans, start = [], 0
    while (a := text.find("<|im_end|>\n<|im_start|>user\n<tool_response>", start)) >= 0:
        b = text.index("<|im_start|>assistant\n", a) + len("<|im_start|>assistant\n")
        spans.append((a, b))
        start = b
    return spans


@pytest.mark.parametrize("template", ["qwen2.5", "qwen3"])
def test_tool_call_rollout_renders_like_the_template(template, tiny_tokenizer, qwen3_tokenizer, bm25) -> None:
    tok = tiny_tokenizer if template == "qwen2.5" else qwen3_tokenizer
    think = "<think>\nI should look it up.\n</think>\n\n"
    first = think + CALL
    final = "<think>\nThe passage says it.\n</think>\n\n<answer> Tim Burton </answer>"
    script = [first + " never sampled", _call('{"name": "lookup", "arguments": {"query": "x"}}'), final + "<|im_end|>"]
    backend = ScriptedBackend(script, tok)
    engine = RolloutEngine(backend, bm25, tok, RolloutConfig(protocol="tool_call", max_prompt_tokens=900, topk=2))
    (traj,) = engine.generate_for_questions([QUESTION]).trajectories
    assert (traj.finish_reason, traj.answer, traj.num_searches, traj.invalid_actions) == ("answer", "Tim Burton", 1, 1)
    assert [k for _, _, k in traj.chunks] == ["policy", "observation", "policy", "invalid", "policy"]

    body = format_passages(bm25.search(["Ed Wood film director"], 2)[0]).strip()
    invalid = tool_call.INVALID_CALL_TEMPLATE.format(
        reason="the tool call calls an unknown tool 'lookup'; the only tool is 'search'"
    )
    # Qwen2.5 writes content + "\n<tool_call>…"; Qwen3 splits the <think> block off the content
    reasoning = think[:-1] if template == "qwen2.5" else think
    messages = _conversation(body, invalid, final, reasoning)
    whole = tok.apply_chat_template(messages, tools=[SEARCH_TOOL], tokenize=False)
    decoded = tok.decode(traj.prompt_ids + traj.response_ids, skip_special_tokens=False)
    # the template closes the last turn with "<|im_end|>\n"; the policy sampled up to and including its EOS
    assert decoded + "\n" == whole
    assert think in traj.response_text  # reasoning kept as sampled, in every protocol and template

    text = traj.response_text
    spans = _inserted_spans(text)
    assert len(spans) == 2 and body in text[slice(*spans[0])] and invalid in text[slice(*spans[1])]
    offsets = token_char_offsets(tok, traj.response_ids)
    expected = [
        0 if any(a <= offsets[k] and offsets[k + 1] <= b for a, b in spans) else 1 for k in range(len(offsets) - 1)
    ]
    assert traj.loss_mask == expected
    # each later turn was prompted with the exact ids so far (history never re-rendered or re-tokenized)
    assert backend.calls[1][0] == traj.prompt_ids + traj.response_ids[: traj.chunks[1][1]]
    assert backend.calls[2][0] == traj.prompt_ids + traj.response_ids[: traj.chunks[3][1]]


def test_qwen3_template_strips_old_reasoning_but_history_is_kept(qwen3_tokenizer, bm25) -> None:
    """Re-rendering a finished exchange under a new user turn drops its <think>; the ids the policy trains on
    keep it, because the engine only ever appends the template's delta."""
    tok = qwen3_tokenizer
    think = "<think>\nold reasoning\n</think>\n\n"
    engine = RolloutEngine(
        ScriptedBackend([think + CALL, "<answer> x </answer><|im_end|>"], tok),
        bm25,
        tok,
        RolloutConfig(protocol="tool_call", max_prompt_tokens=900),
    )
    (traj,) = engine.generate_for_questions([QUESTION]).trajectories
    later = _conversation("b", "i", "<answer> x </answer>", think)[:2] + [{"role": "user", "content": "next"}]
    assert "old reasoning" not in tok.apply_chat_template(later, tools=[SEARCH_TOOL], tokenize=False)
    assert traj.response_text.startswith(think + CALL + "<|im_end|>\n<|im_start|>user\n<tool_response>\n")


def test_same_trajectory_scores_the_same_em_under_both_protocols(tiny_tokenizer, bm25) -> None:
    golds = ["Tim Burton"]
    scripts = {
        "search_r1": ["<search> Ed Wood film director </search>", "<answer> Tim Burton </answer>"],
        "tool_call": [CALL, "<answer> Tim Burton </answer><|im_end|>"],
    }
    scores = {}
    for name, script in scripts.items():
        engine = RolloutEngine(
            ScriptedBackend(script, tiny_tokenizer), bm25, tiny_tokenizer, RolloutConfig(protocol=name, topk=2)
        )
        (traj,) = engine.generate_for_questions([QUESTION]).trajectories
        assert traj.queries == ["Ed Wood film director"] and traj.answer == "Tim Burton"
        scores[name] = score_trajectory(traj, golds)
    assert scores["search_r1"] == scores["tool_call"] and scores["tool_call"].em == 1.0


def test_long_observation_is_shortened_inside_the_tool_message(tiny_tokenizer, bm25) -> None:
    renderer = TC.bind(tiny_tokenizer)
    ids = renderer.observation_ids("Doc 1(Title: x) " + "word " * 400, 60)
    text = tiny_tokenizer.decode(ids, skip_special_tokens=False)
    assert len(ids) <= 60 and text.endswith("\n</tool_response><|im_end|>\n<|im_start|>assistant\n")
    with pytest.raises(ValueError, match="raise max_obs_tokens"):
        renderer.observation_ids("body", 5)


def test_templates_that_cannot_carry_tool_calls_are_refused(tiny_model_dir) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = CHATML_TEMPLATE  # ignores tool_calls
    with pytest.raises(ValueError, match="does not render assistant tool calls"):
        RolloutEngine(ScriptedBackend([], tok), None, tok, RolloutConfig(protocol="tool_call"))
    # a template that shows reasoning only on the last message re-renders history when a tool message is added
    tok.chat_template = QWEN3_TOOLS_TEMPLATE.replace("(loop.last or reasoning)", "loop.last")
    with pytest.raises(ValueError, match="re-renders earlier turns when a tool message is added"):
        TC.bind(tok)
    tok.chat_template = None
    with pytest.raises(ValueError, match="has none"):
        TC.bind(tok)


@pytest.mark.parametrize("name", ["search_r1", "tool_call"])
def test_written_turns_parse_back(name: str) -> None:
    proto = get_protocol(name)
    for action in (Action("search", "Ed Wood"), Action("answer", "Tim Burton")):
        assert proto.parse_action(proto.write_turn("thinking", action)) == action
    assert proto.write_turn("t", Action("search", "q")).endswith(proto.stop_strings[0])
    with pytest.raises(ValueError, match="search or answer"):
        proto.write_turn("t", Action("invalid"))
    assert (
        get_protocol("search_r1").write_turn("t", Action("search", "q")) == "<think> t </think>\n<search> q </search>"
    )


CALLY = st.lists(
    st.sampled_from(
        ["<tool_call>", "</tool_call>", '{"name": "search"', ', "arguments": ', '{"query": "q"}', "}", '"']
        + ["<answer>", "</answer>", "[", "null", " ", "\n"]
    )
    | st.text(max_size=5),
    max_size=25,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(CALLY)
def test_tool_call_parser_never_raises(text: str) -> None:
    action = tool_call.parse_action(text)
    assert action.kind in ("search", "answer", "invalid")
    assert (action.kind == "invalid") == bool(action.reason)
    if action.kind == "search":
        assert action.content and action.content == action.content.strip()


def test_a_search_without_results_gets_the_no_results_tool_message(tiny_tokenizer, bm25) -> None:
    call = _call('{"name": "search", "arguments": {"query": "the of and"}}')  # stopwords only: BM25 finds nothing
    script = ["<think>\nlook\n</think>\n\n" + call, "<answer> x </answer><|im_end|>"]
    engine = RolloutEngine(
        ScriptedBackend(script, tiny_tokenizer), bm25, tiny_tokenizer, RolloutConfig(protocol="tool_call", topk=2)
    )
    (traj,) = engine.generate_for_questions([QUESTION]).trajectories
    assert traj.doc_ids == [[]] and traj.search_failures == 0
    assert f"<tool_response>\n{tool_call.NO_RESULTS_TEXT}\n</tool_response>" in traj.response_text
