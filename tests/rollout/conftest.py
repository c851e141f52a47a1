"""Fixtures for rollout tests: one tiny Qwen2 (random weights, on-the-fly tokenizer) per session and a
real BM25 retriever over the HotpotQA sample corpus. Other test folders may copy ``tiny_model_dir``."""

from __future__ import annotations

from pathlib import Path

import pytest

from searchr1.models import build_tiny_qwen2


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with a tiny randomly initialised Qwen2ForCausalLM and its tokenizer."""
    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir: Path):
    """The tiny model's tokenizer, reloaded through ``AutoTokenizer`` as training code does."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path):
    """The tiny model in float32 eval mode on CPU."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype="float32").eval()


@pytest.fixture(scope="session")
def bm25(data_dir: Path):
    """A real in-memory BM25 retriever over the HotpotQA sample corpus."""
    from searchr1.retrieval import BM25Retriever

    return BM25Retriever(corpus=str(data_dir / "hotpotqa_dev_sample" / "corpus.jsonl"))


def token_char_offsets(tokenizer, ids: list[int]) -> list[int]:
    """Character offset where each token starts in ``decode(ids)`` (plus the total length at the end)."""
    return [len(tokenizer.decode(ids[:i], skip_special_tokens=False)) for i in range(len(ids) + 1)]


def assert_masks_match_text(tokenizer, traj) -> None:
    """Masks are 0 exactly on tokens inside <information> blocks and invalid-action messages, 1 elsewhere.

    The expected mask is derived independently from the decoded text (character spans of the inserted
    blocks mapped to tokens) and compared with the mask the engine recorded at append time.
    """
    import re

    from searchr1.protocols import INVALID_ACTION_TEXT

    text = traj.response_text
    assert text == tokenizer.decode(traj.response_ids, skip_special_tokens=False)
    assert (
        "".join(tokenizer.decode(traj.response_ids[s:e], skip_special_tokens=False) for s, e, _ in traj.chunks) == text
    )
    inserted = [m.span() for m in re.finditer(r"\n\n<information>.*?</information>\n\n", text, re.DOTALL)]
    start = 0
    while (i := text.find(INVALID_ACTION_TEXT, start)) >= 0:
        inserted.append((i, i + len(INVALID_ACTION_TEXT)))
        start = i + len(INVALID_ACTION_TEXT)
    offsets = token_char_offsets(tokenizer, traj.response_ids)
    expected = [
        0 if any(a <= offsets[k] and offsets[k + 1] <= b for a, b in inserted) else 1
        for k in range(len(traj.response_ids))
    ]
    assert traj.loss_mask == expected
    for s, e, kind in traj.chunks:
        assert set(traj.loss_mask[s:e]) == {1 if kind == "policy" else 0}
    assert all(lp == 0.0 for lp, m in zip(traj.logprobs, traj.loss_mask) if m == 0)
