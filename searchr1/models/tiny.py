"""Tiny, randomly initialised Qwen2 models (and a SmolLM2-shaped Llama), BPE tokenizer trained on the fly (offline).

Used by tests, benchmarks and smoke runs everywhere in the project. The tokenizer reproduces Qwen2's
pre-tokenization (NFC normaliser, Qwen2's split regex, byte-level without regex, byte-level decoder)
so that ``AutoTokenizer.from_pretrained(folder)`` — which builds a ``Qwen2Tokenizer`` for a
``model_type: qwen2`` folder — encodes exactly as the tokenizer that was trained. The Search-R1 tags
are ordinary text (as in real Qwen tokenizers), made compact by repeating them in the training texts. The chat
template is a Qwen2.5-style tool-calling one (:mod:`searchr1.models.chat_templates`; plain ChatML without tools),
so both rollout protocols run on tiny models.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from searchr1.atomic import follow_umask
from searchr1.models.chat_templates import QWEN25_TOOLS_TEMPLATE
from searchr1.protocols import INSTRUCTION_TEMPLATE, INVALID_ACTION_TEXT, OBSERVATION_TEMPLATE

QWEN2_PRETOKENIZE_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""  # noqa: E501 (Qwen2's PRETOKENIZE_REGEX verbatim)
PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [PAD_TOKEN, IM_START, IM_END]

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
"""Qwen-style ChatML (without Qwen's default system message); the default template renders the same without tools."""

_TAG_TEXTS = [
    "<think> I need to find who directed the film. </think>\n<search> film director 1994 </search>",
    '\n\n<information>Doc 1(Title: "Ed Wood") Ed Wood is a film.\n</information>\n\n',
    "<think> The answer is in the passage. </think>\n<answer> Tim Burton </answer>",
    "<search> Scott Derrickson nationality </search><answer> yes </answer><answer> no </answer>",
    "Numbers 0 1 2 3 4 5 6 7 8 9 10 1994 2024 and unicode: café, naïve, Zürich, 東京, émigré — “quotes”.",
]


def _packaged_texts() -> Iterator[str]:
    """Corpus contents, questions and prompt text of the packaged HotpotQA sample."""
    root = resources.files("searchr1") / "assets" / "hotpotqa_dev_sample"
    for name, key in (("corpus.jsonl", "contents"), ("questions.jsonl", "question")):
        with (root / name).open("r", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)[key]
    yield INSTRUCTION_TEMPLATE
    yield INVALID_ACTION_TEXT
    yield OBSERVATION_TEMPLATE


def default_texts() -> list[str]:
    """Training texts of the default tiny tokenizer (packaged data + tag-rich snippets, repeated)."""
    return list(_packaged_texts()) + _TAG_TEXTS * 50 + [INSTRUCTION_TEMPLATE, INVALID_ACTION_TEXT] * 20


def build_tiny_tokenizer(
    texts: Iterable[str], vocab_size: int = 2048, chat_template: str | None = None
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer with Qwen2's pre-tokenization and a ChatML chat template.

    Args:
        texts: training texts (include the tags you want encoded compactly, many times).
        vocab_size: target vocabulary size including the 256 byte tokens and 3 special tokens.
        chat_template: Jinja chat template; default :data:`~searchr1.models.chat_templates.QWEN25_TOOLS_TEMPLATE`.

    Returns:
        A fast tokenizer with ``<|endoftext|>`` as pad, ``<|im_end|>`` as eos and ``<|im_start|>``.
    """
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        unk_token=None,
        additional_special_tokens=[IM_START],
        model_max_length=32768,
        padding_side="left",
    )
    hf.chat_template = chat_template or QWEN25_TOOLS_TEMPLATE
    return hf


def build_tiny_qwen2(
    out_dir: str | Path,
    *,
    texts: Iterable[str] | None = None,
    vocab_size: int = 2048,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 4096,
    seed: int = 0,
    tie_word_embeddings: bool = True,
    chat_template: str | None = None,
) -> Path:
    """Build a randomly initialised ``Qwen2ForCausalLM`` and its tokenizer into ``out_dir``.

    Args:
        out_dir: folder to write (created); afterwards loadable with ``from_pretrained(out_dir)``.
        texts: tokenizer training texts; default: the packaged HotpotQA sample + prompt text.
        vocab_size: tokenizer target vocabulary; the model's vocabulary is the tokenizer's length.
        hidden_size: model width.
        num_layers: decoder layers.
        num_heads: attention heads.
        num_kv_heads: key/value heads (grouped-query attention).
        intermediate_size: MLP width.
        max_position_embeddings: longest supported sequence.
        seed: seeds the weight initialisation (the build is deterministic for a seed).
        tie_word_embeddings: share input and output embeddings.
        chat_template: the tokenizer's chat template (default: the Qwen2.5-style tool-calling one).

    Returns:
        ``out_dir`` as a Path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = default_texts() if texts is None else texts
    tokenizer = build_tiny_tokenizer(texts, vocab_size=vocab_size, chat_template=chat_template)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return _init_and_save(Qwen2ForCausalLM, config, tokenizer, seed, out)


SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""SmolLM2-Instruct's chat template as its tokenizer ships it (plain ChatML, a default system message, no tools)."""


def build_tiny_llama(
    out_dir: str | Path,
    *,
    texts: Iterable[str] | None = None,
    vocab_size: int = 1024,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 64,
    seed: int = 0,
) -> Path:
    """A randomly initialised ``LlamaForCausalLM`` shaped like SmolLM2-Instruct, for offline tests of the real-model
    path: Llama architecture, tied embeddings, SmolLM2's chat template, and its token roles (``<|im_end|>`` is both
    eos and pad, ``<|im_start|>`` is bos). Same tokenizer training as :func:`build_tiny_qwen2`; returns ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(default_texts() if texts is None else texts, vocab_size, SMOLLM2_CHAT_TEMPLATE)
    tokenizer.pad_token, tokenizer.bos_token = IM_END, IM_START
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return _init_and_save(LlamaForCausalLM, config, tokenizer, seed, out)


def _init_and_save(model_cls: type, config: Any, tokenizer: Any, seed: int, out: Path) -> Path:
    """Initialise ``model_cls(config)`` from ``seed`` (without touching the global RNG), give its generation config
    the tokenizer's eos/pad ids, and save model and tokenizer to ``out``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _cache_key(kwargs: dict) -> str:
    kwargs = {**kwargs, "chat_template": kwargs.get("chat_template") or QWEN25_TOOLS_TEMPLATE}
    blob = json.dumps({k: kwargs[k] for k in sorted(kwargs)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def ensure_tiny_model(cache_dir: str | None = None, **kwargs) -> Path:
    """Build a tiny Qwen2 once into a cache folder and reuse it afterwards.

    The folder is ``<root>/tiny-qwen2-<hash of kwargs>`` with root ``cache_dir``, else
    ``$SEARCHR1_CACHE``, else ``~/.cache/searchr1``. The build happens in a temporary folder that is
    renamed into place, so concurrent callers never see a half-written model.

    Args:
        cache_dir: root folder of the cache.
        **kwargs: forwarded to :func:`build_tiny_qwen2` (``texts`` must be a list to be hashed).

    Returns:
        The model folder.
    """
    root = Path(cache_dir or os.environ.get("SEARCHR1_CACHE") or Path.home() / ".cache" / "searchr1")
    if "texts" in kwargs and kwargs["texts"] is not None:
        kwargs["texts"] = list(kwargs["texts"])
    target = root / f"tiny-qwen2-{_cache_key(kwargs)}"
    if (target / "config.json").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-qwen2-", dir=root))
    try:
        build_tiny_qwen2(tmp, **kwargs)
        follow_umask(tmp)  # mkdtemp and safetensors write 0700/0600: the cached model follows the umask (0755/0644)
        for attempt in range(3):
            try:
                os.rename(tmp, target)
                break
            except OSError:
                if (target / "config.json").exists():  # another process won the race: its folder is complete
                    break
                if attempt == 2:
                    raise
                shutil.rmtree(target, ignore_errors=True)  # an incomplete folder left by a crashed writer
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
