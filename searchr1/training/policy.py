"""Model loading and the two forward passes the update needs: response log-probs and critic values.

Layout (from ``RolloutBatch``): prompts left-padded to P, responses right-padded to R, so the logits
that predict response token t sit at position ``P - 1 + t``. Only the last ``R + 1`` positions are
projected to the vocabulary (``logits_to_keep``) and the log-softmax is taken per micro-batch, so the
full (B, P+R, V) logits are never materialised.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from searchr1.algorithms import entropy_from_logits

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


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Load a tokenizer with left padding and a pad token (EOS when the tokenizer has none)."""
    tok = AutoTokenizer.from_pretrained(resolve_model_path(name_or_path), trust_remote_code=trust_remote_code)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(
    name_or_path: str, dtype: torch.dtype | None = None, gradient_checkpointing: bool = False, trust_remote_code=False
) -> PreTrainedModel:
    """Load a causal LM (weights from a hub name or local folder)."""
    model = AutoModelForCausalLM.from_pretrained(
        resolve_model_path(name_or_path), dtype=dtype, trust_remote_code=trust_remote_code
    )
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    return model


class ValueModel(nn.Module):
    """Critic: a causal-LM backbone (no LM head) plus a scalar value head on every position.

    Args:
        name_or_path: backbone weights (usually the policy's starting checkpoint, as in Search-R1).
        dtype: parameter dtype.
        gradient_checkpointing: enable activation checkpointing in the backbone.
        seed: seed of the value head's random initialisation (its own generator, so two runs with the same seed
            start from the same critic whatever the global RNG state is).
    """

    def __init__(
        self,
        name_or_path: str,
        dtype: torch.dtype | None = None,
        gradient_checkpointing: bool = False,
        seed: int = 0,
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

    def forward(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor) -> Tensor:
        """Values per position: (B, L) → (B, L) float32."""
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state
        return self.value_head(hidden).squeeze(-1).float()


def response_logprobs(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    position_ids: Tensor,
    prompt_length: int,
    temperature: float = 1.0,
    with_entropy: bool = False,
    entropy_grad: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Log-probs of the response tokens under ``model`` (and optionally the per-token entropy).

    Args:
        model: a causal LM.
        input_ids: (B, P+R) prompt (left-padded) + response (right-padded) ids.
        attention_mask: (B, P+R).
        position_ids: (B, P+R).
        prompt_length: P.
        temperature: logits are divided by it, matching the sampling distribution of the rollout.
        with_entropy: also return the entropy of the (tempered) distribution at each response position.
        entropy_grad: keep the entropy in the autograd graph (only needed for an entropy bonus; without it the
            (B, R, V) softmax tensors are not kept for backward).

    Returns:
        ``(logprobs, entropy)``: (B, R) float32 each (entropy None unless asked).
    """
    response_length = input_ids.shape[1] - prompt_length
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=False,
        logits_to_keep=response_length + 1,
    )
    logits = out.logits[:, :-1, :].float()  # (B, R, V)
    if temperature != 1.0:
        logits = logits / temperature
    responses = input_ids[:, prompt_length:]  # (B, R)
    # selective log-softmax: no (B, R, V) log-prob tensor is materialised
    logprobs = logits.gather(-1, responses.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    entropy = None
    if with_entropy:
        entropy = entropy_from_logits(logits if entropy_grad else logits.detach())
    return logprobs, entropy


def response_values(
    critic: ValueModel, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, prompt_length: int
):
    """Critic values of the states before each response token: (B, P+R) inputs → (B, R)."""
    values = critic(input_ids, attention_mask, position_ids)  # (B, P+R)
    return values[:, prompt_length - 1 : -1]
