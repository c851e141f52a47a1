"""Models: the one place weights are loaded and saved (``loading``), the critic (``value``), tiny test models."""

from searchr1.models.loading import (
    TINY_PREFIX,
    TINY_PRESETS,
    load_causal_lm,
    load_tokenizer,
    resolve_model_path,
    save_hf_folder,
)
from searchr1.models.lora import LoRAConfig, frozen_reference, is_lora, trainable_parameters
from searchr1.models.tiny import build_tiny_qwen2, build_tiny_tokenizer, ensure_tiny_model
from searchr1.models.value import ValueModel

__all__ = [
    "TINY_PREFIX",
    "TINY_PRESETS",
    "LoRAConfig",
    "ValueModel",
    "build_tiny_qwen2",
    "build_tiny_tokenizer",
    "ensure_tiny_model",
    "frozen_reference",
    "is_lora",
    "load_causal_lm",
    "load_tokenizer",
    "resolve_model_path",
    "save_hf_folder",
    "trainable_parameters",
]
