"""The tiny model builder: tokenizer round-trips through save/AutoTokenizer, tags stay compact, builds are
deterministic and cached."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from searchr1.models import build_tiny_qwen2, build_tiny_tokenizer, ensure_tiny_model
from searchr1.models.tiny import default_texts
from searchr1.protocols import build_prompt

TEXTS = [
    "<think> Who directed Ed Wood? </think>\n<search> Ed Wood director </search>",
    '\n\n<information>Doc 1(Title: "Ed Wood (film)") Ed Wood is a 1994 film.\n</information>\n\n',
    "<answer> Tim Burton </answer> naïve café Zürich 東京 émigré — 12345 3.14 “x” it's",
    "  leading spaces\r\n\ttabs and CRLF\n\n\n trailing   ",
]


def test_ids_survive_save_and_autotokenizer_reload(tiny_model_dir: Path, tiny_tokenizer) -> None:
    fresh = build_tiny_tokenizer(default_texts())
    for text in TEXTS + [build_prompt("Were Scott Derrickson and Ed Wood of the same nationality", fresh)]:
        ids = fresh(text, add_special_tokens=False).input_ids
        assert tiny_tokenizer(text, add_special_tokens=False).input_ids == ids
        assert tiny_tokenizer.decode(ids) == text
    assert tiny_tokenizer.eos_token == "<|im_end|>"
    assert tiny_tokenizer.pad_token == "<|endoftext|>"
    assert tiny_tokenizer.convert_tokens_to_ids("<|im_start|>") == fresh.convert_tokens_to_ids("<|im_start|>")
    # the special tokens encode to one id each after reload
    chat = tiny_tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert chat.startswith("<|im_start|>user\nhi<|im_end|>")
    ids = tiny_tokenizer(chat, add_special_tokens=False).input_ids
    assert ids[0] == tiny_tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert tiny_tokenizer.eos_token_id in ids


def test_tags_are_compact_and_not_special(tiny_tokenizer) -> None:
    for tag in ["<search>", "</search>", "<answer>", "</answer>", "<information>", "</information>", "<think>"]:
        assert len(tiny_tokenizer(tag, add_special_tokens=False).input_ids) <= 3, tag
        assert tag not in tiny_tokenizer.all_special_tokens


def test_build_is_deterministic_and_cached(tmp_path: Path) -> None:
    texts = TEXTS * 5
    a = build_tiny_qwen2(tmp_path / "a", texts=texts, vocab_size=300, seed=1)
    b = build_tiny_qwen2(tmp_path / "b", texts=texts, vocab_size=300, seed=1)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    ma, mb = AutoModelForCausalLM.from_pretrained(a), AutoModelForCausalLM.from_pretrained(b)
    for (na, pa), (_, pb) in zip(ma.state_dict().items(), mb.state_dict().items()):
        assert torch.equal(pa, pb), na
    assert ma.config.vocab_size == len(AutoTokenizer.from_pretrained(a))

    first = ensure_tiny_model(cache_dir=str(tmp_path / "cache"), texts=texts, vocab_size=300)
    mtime = (first / "model.safetensors").stat().st_mtime_ns
    again = ensure_tiny_model(cache_dir=str(tmp_path / "cache"), texts=texts, vocab_size=300)
    assert again == first and (again / "model.safetensors").stat().st_mtime_ns == mtime
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.name]  # no temp folder left behind
