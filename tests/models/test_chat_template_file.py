"""A user-supplied chat template (``model.chat_template`` / ``--chat-template``) gives a ChatML tokenizer without
tool support the ``tool_call`` protocol, with the protocol's own checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from searchr1.models import load_tokenizer
from searchr1.models.chat_templates import QWEN25_TOOLS_TEMPLATE
from searchr1.models.tiny import CHATML_TEMPLATE, build_tiny_qwen2
from searchr1.protocols import get_protocol
from searchr1.resources import package_path

SHIPPED = "pkg:assets/chat_templates/chatml_tools.jinja"


@pytest.fixture(scope="module")
def chatml_model_dir(tmp_path_factory) -> str:
    """A tiny model whose tokenizer has plain ChatML (no tools), like SmolLM2's."""
    return str(build_tiny_qwen2(tmp_path_factory.mktemp("chatml") / "model", chat_template=CHATML_TEMPLATE))


def test_shipped_template_is_the_hermes_tool_template():
    assert Path(package_path(SHIPPED)).read_text() == QWEN25_TOOLS_TEMPLATE


def test_plain_chatml_is_refused_and_the_error_names_the_option(chatml_model_dir):
    with pytest.raises(ValueError, match="--chat-template"):
        get_protocol("tool_call").bind(load_tokenizer(chatml_model_dir))


def test_given_template_enables_tool_calls(chatml_model_dir):
    tok = load_tokenizer(chatml_model_dir, chat_template=SHIPPED)
    protocol = get_protocol("tool_call")
    renderer = protocol.bind(tok)  # the stable-prefix and token-boundary checks pass
    prompt = protocol.build_prompt("Who wrote Hamlet?", tok)
    assert "<tools>" in prompt and '"name": "search"' in prompt and prompt.endswith("<|im_start|>assistant\n")
    ids = renderer.observation_ids("Doc 1(Title: Hamlet) Shakespeare", 64)
    assert "<tool_response>\nDoc 1(Title: Hamlet) Shakespeare\n</tool_response>" in tok.decode(ids)
    # the search_r1 protocol's prompt is unchanged by the template (plain ChatML without tools)
    plain = get_protocol("search_r1").build_prompt("Who wrote Hamlet?", load_tokenizer(chatml_model_dir))
    assert get_protocol("search_r1").build_prompt("Who wrote Hamlet?", tok) == plain


def test_training_module_and_missing_file(chatml_model_dir, tmp_path):
    from searchr1.training import SearchR1Module

    module = SearchR1Module(model_name_or_path=chatml_model_dir, chat_template=SHIPPED)
    assert module.tokenizer.chat_template == QWEN25_TOOLS_TEMPLATE
    with pytest.raises(FileNotFoundError, match="chatml_tools.jinja"):
        load_tokenizer(chatml_model_dir, chat_template=str(tmp_path / "nope.jinja"))
