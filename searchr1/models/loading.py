"""The one place models are loaded and saved: name resolution (``tiny:<preset>``), tokenizer, causal LM, HF folder.

Everything that needs a policy's weights (training, evaluation, tools, benchmarks) goes through here, so the
presets, the padding side and the saved folder layout are the same everywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from searchr1.atomic import write_dir_atomically
from searchr1.models.lora import LoRAConfig, adapter_state, apply_lora, is_lora, lora_scaling, merge_lora_stream

TINY_PREFIX = "tiny:"
TINY_PRESETS: dict[str, dict[str, int]] = {
    # ~0.2M params: unit tests and the embedded default's smoke runs
    "micro": {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 128},
    # ~1.5M params: fast CPU learning demos
    "small": {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 384},
    # ~10M params: benchmarks
    "base": {"hidden_size": 256, "num_layers": 6, "num_heads": 8, "num_kv_heads": 4, "intermediate_size": 1024},
}


def resolve_model_path(name_or_path: str) -> str:
    """Map ``tiny:<preset>`` to a locally built tiny Qwen2 (cached); other names pass through to ``from_pretrained``."""
    if not name_or_path.startswith(TINY_PREFIX):
        looks_local = name_or_path.startswith(("/", "./", "../", "~")) or name_or_path.count("/") > 1
        if looks_local and not Path(name_or_path).expanduser().exists():
            raise FileNotFoundError(
                f"model folder not found: {name_or_path!r}. Give an existing local folder (with config.json), a hub "
                "name such as 'Qwen/Qwen2.5-3B', or 'tiny:micro' for an offline tiny model"
            )
        return name_or_path
    preset = name_or_path[len(TINY_PREFIX) :] or "micro"
    if preset not in TINY_PRESETS:
        raise ValueError(f"unknown tiny model preset {preset!r}; valid: {', '.join(TINY_PRESETS)} (e.g. 'tiny:micro')")
    from searchr1.models.tiny import ensure_tiny_model

    return str(ensure_tiny_model(**TINY_PRESETS[preset]))


def load_tokenizer(
    name_or_path: str, trust_remote_code: bool = False, chat_template: str | None = None
) -> PreTrainedTokenizerBase:
    """Load a tokenizer with left padding and a pad token (EOS when the tokenizer has none).

    ``chat_template``: a Jinja file (``pkg:`` paths allowed) that replaces the tokenizer's own chat template, e.g.
    ``pkg:assets/chat_templates/chatml_tools.jinja`` to give a ChatML model without tool support tool calling.
    """
    tok = AutoTokenizer.from_pretrained(resolve_model_path(name_or_path), trust_remote_code=trust_remote_code)
    if chat_template is not None:
        tok.chat_template = read_chat_template(chat_template)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def read_chat_template(path: str) -> str:
    """The text of a Jinja chat-template file (``pkg:`` paths resolved), with a clear error when it is missing."""
    from searchr1.resources import package_path

    file = Path(package_path(path)).expanduser()
    if not file.is_file():
        raise FileNotFoundError(
            f"chat template file not found: {path!r}; give a Jinja file, e.g. the shipped tool-calling template for "
            "ChatML models: pkg:assets/chat_templates/chatml_tools.jinja"
        )
    return file.read_text()


def load_causal_lm(
    name_or_path: str,
    dtype: torch.dtype | None = None,
    gradient_checkpointing: bool = False,
    trust_remote_code=False,
    lora: LoRAConfig | None = None,
) -> PreTrainedModel:
    """Load a causal LM (weights from a hub name or local folder), with the KV cache off (training's setting).

    ``lora``: wrap it with fresh LoRA adapters (base weights frozen; see :mod:`searchr1.models.lora`).
    """
    model = AutoModelForCausalLM.from_pretrained(
        resolve_model_path(name_or_path), dtype=dtype, trust_remote_code=trust_remote_code
    )
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    return apply_lora(model, lora) if lora is not None else model


def plain_class_name(model: nn.Module) -> str:
    """The model's own class name, without the ``FSDP`` subclass ``fully_shard`` puts in front of it."""
    from torch.distributed.fsdp import FSDPModule

    for cls in type(model).__mro__:
        if not issubclass(cls, FSDPModule):
            return cls.__name__
    return type(model).__name__


def save_hf_folder(
    model: nn.Module,
    tokenizer,
    folder: str | Path,
    state_dict: dict[str, torch.Tensor] | None = None,
    safe_serialization: bool = True,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Write ``model`` + ``tokenizer`` as a Hugging Face folder (loadable with ``from_pretrained``), atomically.

    A LoRA model (``peft``) is written merged (``W + (alpha / r) · B A``, plain names: loads with
    ``AutoModelForCausalLM``), with its adapter alone in ``<folder>/adapter`` (``PeftModel.from_pretrained``).

    The folder is built next to ``folder`` and renamed into place (:func:`searchr1.atomic.write_dir_atomically`),
    so a reader (vLLM, a resumed run, the hub upload) never sees half a model; an existing ``folder`` is replaced.

    Args:
        model: a Hugging Face model, possibly sharded with FSDP2 (``config.json`` then names the plain class).
        tokenizer: its tokenizer.
        folder: the target folder.
        state_dict: the weights to write, e.g. the full state dict gathered from FSDP2 shards on rank 0 (call this
            on rank 0 only then); None: the model's own ``state_dict()``.
        safe_serialization: ``.safetensors`` (no pickle) rather than ``.bin``.
        extra_files: more text files to write into the folder (name -> content), e.g. the run's settings.
    """

    plain = model
    if is_lora(model):
        state = state_dict if state_dict is not None else model.state_dict()
        plain, state_dict = model.get_base_model(), dict(merge_lora_stream(state.items(), lora_scaling(model)))

    def write(tmp: Path) -> None:
        plain.save_pretrained(tmp, state_dict=state_dict, safe_serialization=safe_serialization)
        if plain is not model:
            model.save_pretrained(tmp / "adapter", state_dict=adapter_state(state), safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        config_file = tmp / "config.json"
        config = json.loads(config_file.read_text())
        config["architectures"] = [plain_class_name(plain)]
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")

    return write_dir_atomically(folder, write)
