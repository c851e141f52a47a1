"""Models: the one place weights are loaded and saved (``loading``), the critic (``value``), tiny test models."""

from searchr1.models.loading import (
    TINY_PREFIX,
    TINY_PRESETS,
    load_causal_lm,
    load_tokenizer,
    resolve_model_path,
    save_hf_folder,
)
from searchr1.models.tiny import build_tiny_qwen2, build_tiny_tokenizer, ensure_tiny_model
from searchr1.models.value import ValueModel

__all__ = [
    "TINY_PREFIX",
    "TINY_PRESETS",
    "ValueModel",
    "build_tiny_qwen2",
    "build_tiny_tokenizer",
    "ensure_tiny_model",
    "load_causal_lm",
    "load_tokenizer",
    "resolve_model_path",
    "save_hf_folder",
]
