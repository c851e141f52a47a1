"""The Search-R1 text protocol has one home (searchr1/protocols) and its texts are Search-R1's bytes."""

from __future__ import annotations

from pathlib import Path

from searchr1 import protocols
from searchr1.protocols import search_r1
from searchr1.retrieval import Passage, format_passages
from searchr1.rollout import RolloutConfig, RolloutEngine, ScriptedBackend

PACKAGE = Path(protocols.__file__).resolve().parents[1]

# Search-R1 a14dc3a search_r1/llm_agent/generation.py, execute_predictions / _passages2string
SEARCH_R1_INVALID = (
    "\nMy previous action is invalid. If I want to search, I should put the query between <search> and </search>. "
    "If I want to give the final answer, I should put the answer between <answer> and </answer>. Let me try again.\n"
)


def _search_r1_observation(docs: list[str]) -> str:
    """What Search-R1 appends after a search whose documents have these ``contents``."""
    body = ""
    for idx, content in enumerate(docs):
        lines = content.split("\n")
        body += f"Doc {idx + 1}(Title: {lines[0]}) " + "\n".join(lines[1:]) + "\n"
    return f"\n\n<information>{body.strip()}</information>\n\n"


def test_observation_is_byte_identical_to_search_r1() -> None:
    docs = ['"Ed Wood (film)"\nEd Wood is a 1994 film.\nSecond line.', "No quotes\n  spaced text  "]
    passages = [Passage.from_contents(str(i), c) for i, c in enumerate(docs)]
    assert protocols.observation(format_passages(passages)) == _search_r1_observation(docs)
    assert protocols.observation("") == "\n\n<information></information>\n\n"
    assert protocols.INVALID_ACTION_TEXT == SEARCH_R1_INVALID


class RecordingBackend(ScriptedBackend):
    """The scripted backend, keeping the sampling parameters of every call."""

    def generate(self, prompts, params):
        self.params = [*getattr(self, "params", []), params]
        return super().generate(prompts, params)


def test_engine_uses_the_protocols_stop_strings_and_texts(tiny_tokenizer, bm25) -> None:
    backend = RecordingBackend(["no action", "<answer> x </answer>"], tiny_tokenizer)
    engine = RolloutEngine(backend, bm25, tiny_tokenizer, RolloutConfig(max_prompt_tokens=512))
    (traj,) = engine.generate_for_questions(["q"]).trajectories
    assert list(backend.params[0].stop) == list(protocols.STOP_STRINGS) == ["</search>", "</answer>"]
    assert traj.response_text == "no action" + protocols.INVALID_ACTION_TEXT + "<answer> x </answer>"


def test_protocol_texts_live_only_in_the_protocol_package() -> None:
    needles = [
        "My previous action is invalid",
        "You must conduct reasoning inside",
        "<information>{",
        "Question: (.*?)",
    ]
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "protocols":
            continue
        text = path.read_text()
        offenders += [f"{path.relative_to(PACKAGE)}: {n!r}" for n in needles if n in text]
    assert offenders == []
    registry = {"PROTOCOLS", "Protocol", "Renderer", "get_protocol", "tool_call"}
    assert set(protocols.__all__) - registry <= set(dir(search_r1))
