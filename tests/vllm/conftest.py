"""Fixtures for the vLLM backend tests (run in .venv-vllm: ``.venv-vllm/bin/pytest tests/vllm -m vllm``).

One tiny Qwen2 per session, shared by a colocated HF reference model and one in-process vLLM engine.
The model departs from ``build_tiny_qwen2``'s defaults in two ways:

* 2 heads of width 32 (vLLM's CPU attention supports head sizes 32, 64, 80, ...; the default 16 fails);
* its matrices are re-drawn with std 0.3, so greedy decoding is diverse and top-1 margins are mostly large
  (std 0.02 makes every continuation one repeated token).

Its ``generation_config.json`` also lists, besides ``<|im_end|>``, an extra EOS id: the token that greedy
decoding of ``EOS_PROMPT`` produces at step ``EOS_STEP`` (found with HF first), so that one prompt ends by EOS.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from searchr1.models import build_tiny_qwen2

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

EOS_PROMPT = "<search> Ed Wood director </search>"
EOS_STEP = 5
PROMPT_TEXTS = [
    "Who directed the film Ed Wood?",
    "<think> I need to search. </think>\n<search> Scott Derrickson nationality </search>",
    "a",
    EOS_PROMPT,
]


@dataclass
class HFReference:
    """A greedy continuation computed with the HF model, one full forward per step (no KV cache).

    Attributes:
        token_ids: greedy ids, ending with an EOS id when one was produced.
        margins: top-1 minus top-2 logit at each step (small = near tie, order may flip numerically).
        finish_reason: ``"eos"`` or ``"length"``.
    """

    token_ids: list[int]
    margins: list[float]
    finish_reason: str


def eos_ids(model) -> set[int]:
    """EOS ids from the model's generation config (an int or a list)."""
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos])


@torch.no_grad()
def hf_greedy(model, prompt: list[int], max_new_tokens: int) -> HFReference:
    """Reference greedy decoding: argmax of the last logits, stop after an EOS id."""
    ids, margins, stops = list(prompt), [], eos_ids(model)
    for _ in range(max_new_tokens):
        logits = model(torch.tensor([ids])).logits[0, -1].float()  # (V,)
        top2 = logits.topk(2).values
        margins.append(float(top2[0] - top2[1]))
        ids.append(int(logits.argmax()))
        if ids[-1] in stops:
            return HFReference(ids[len(prompt) :], margins, "eos")
    return HFReference(ids[len(prompt) :], margins, "length")


@torch.no_grad()
def hf_logprobs(model, prompt: list[int], continuation: list[int], temperature: float = 1.0) -> torch.Tensor:
    """Teacher-forced log-probs of ``continuation`` after ``prompt`` under softmax(logits / temperature).

    Returns:
        Tensor of shape (len(continuation),).
    """
    ids = torch.tensor([prompt + continuation])  # (1, P + L)
    logits = model(ids).logits[0, len(prompt) - 1 : -1].float() / temperature  # (L, V)
    return torch.log_softmax(logits, dim=-1).gather(-1, torch.tensor(continuation)[:, None])[:, 0]


def _sharpen(model, std: float, seed: int) -> None:
    """Redraw every matrix of ``model`` from N(0, std^2) (norm weights and biases unchanged)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 2:
                param.copy_(torch.randn(param.shape, generator=gen) * std)


@pytest.fixture(scope="session")
def vllm_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny tied-embedding Qwen2 folder readable by vLLM's CPU backend (see the module docstring)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2-vllm"), num_heads=2, num_kv_heads=1)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    _sharpen(model, std=0.3, seed=1)
    tokenizer = AutoTokenizer.from_pretrained(path)
    ref = hf_greedy(model, tokenizer.encode(EOS_PROMPT), EOS_STEP + 1)
    extra_eos = ref.token_ids[EOS_STEP]
    assert extra_eos not in ref.token_ids[:EOS_STEP], "pick another EOS_STEP: the token occurs earlier"
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, extra_eos]
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tokenizer(vllm_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(vllm_model_dir)


@pytest.fixture(scope="session")
def prompts(tokenizer) -> list[list[int]]:
    """Token-id prompts of different lengths (the last one ends by EOS under greedy decoding)."""
    return [tokenizer.encode(text) for text in PROMPT_TEXTS]


@pytest.fixture()
def hf_model(vllm_model_dir: Path):
    """A fresh float32 HF copy of the model (tests may perturb it)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(vllm_model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def backend(vllm_model_dir: Path):
    """One in-process vLLM engine on the tiny model for the whole session."""
    from searchr1.rollout.backends.vllm import VLLMBackend

    engine = VLLMBackend(
        model=str(vllm_model_dir), dtype="float32", max_model_len=512, enforce_eager=True, cpu_kvcache_space_gib=1
    )
    print(f"\nvLLM startup: {engine.startup_seconds:.1f} s")
    return engine


@pytest.fixture(scope="session")
def bm25(data_dir: Path):
    """A real in-memory BM25 retriever over the HotpotQA sample corpus."""
    from searchr1.retrieval import BM25Retriever

    return BM25Retriever(corpus=str(data_dir / "hotpotqa_dev_sample" / "corpus.jsonl"))
