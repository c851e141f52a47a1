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
