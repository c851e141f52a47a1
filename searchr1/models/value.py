"""The critic of PPO: a causal-LM backbone (no LM head) with a scalar value head on every position."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import AutoModel

from searchr1.models.loading import resolve_model_path
from searchr1.models.lora import LoRAConfig, apply_lora


class ValueModel(nn.Module):
    """Critic: a causal-LM backbone (no LM head) plus a scalar value head on every position.

    Args:
        name_or_path: backbone weights (usually the policy's starting checkpoint, as in Search-R1).
        dtype: parameter dtype.
        gradient_checkpointing: enable activation checkpointing in the backbone.
        seed: seed of the value head's random initialisation (its own generator, so two runs with the same seed
            start from the same critic whatever the global RNG state is).
        lora: train LoRA adapters on the backbone (frozen base) instead of the whole backbone; the head trains.
    """

    def __init__(
        self,
        name_or_path: str,
        dtype: torch.dtype | None = None,
        gradient_checkpointing: bool = False,
        seed: int = 0,
        lora: LoRAConfig | None = None,
    ) -> None:
        super().__init__()
        self.backbone = AutoModel.from_pretrained(resolve_model_path(name_or_path), dtype=dtype)
        if gradient_checkpointing:
            self.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        hidden = self.backbone.config.hidden_size
        self.value_head = nn.Linear(hidden, 1, dtype=self.backbone.dtype)
        generator = torch.Generator().manual_seed(seed)
        nn.init.normal_(self.value_head.weight, std=1.0 / (hidden + 1) ** 0.5, generator=generator)
        nn.init.zeros_(self.value_head.bias)
        if lora is not None:
            self.backbone = apply_lora(self.backbone, lora, causal_lm=False)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor) -> Tensor:
        """Values per position: (B, L) → (B, L) float32."""
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state
        return self.value_head(hidden).squeeze(-1).float()
