"""Model builders (tiny randomly initialised Qwen2 models for tests and smoke runs)."""

from searchr1.models.tiny import build_tiny_qwen2, build_tiny_tokenizer, ensure_tiny_model

__all__ = ["build_tiny_qwen2", "build_tiny_tokenizer", "ensure_tiny_model"]
