"""LoRA adapters (through ``peft``) for the policy and the critic: wrapping, the adapters-off reference, merging.

With ``model.lora`` set, the base weights are frozen and only the low-rank adapters (``A`` (r, in), ``B`` (out, r),
``W' = W + (alpha / r) · B A``) train. Consequences, each expressed once here:

* The frozen KL reference is the policy itself with its adapters disabled (:class:`AdaptersOff`), not a second copy
  of the weights (the full-model path deep-copies the policy).
* Merged weights (``W'`` under the plain Hugging Face names) are produced from any stream of ``(name, tensor)``
  (:func:`merge_lora_stream`): the generation engine's weight push (vLLM receives merged weights), the pushes to
  asynchronous rollout servers (:func:`merged_state`) and the exported Hugging Face folder use the same function;
  the adapter state is what checkpoints hold.

Departure from verl/TRL: no separate "ref" worker or ``ref_model``; and no in-place ``merge_adapter()`` /
``unmerge_adapter()`` round trip (it would change the base weights by float rounding each time).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

_PEFT_PREFIX = "base_model.model."
_BASE = ".base_layer."
ADAPTER = "default"


@dataclass
class LoRAConfig:
    """Low-rank adapters for the policy (and the critic): ``--model.lora.r=8`` turns them on; null: full training."""

    r: int = 8
    """Adapter rank."""
    alpha: float | None = None
    """Scale numerator: updates are scaled by ``alpha / r``; None: ``2 * r`` (scale 2)."""
    dropout: float = 0.0
    """Dropout on the adapter input (training forwards only)."""
    target_modules: list[str] | str = "all-linear"
    """Module names to adapt (e.g. ``[q_proj, v_proj]``), or ``all-linear`` (every linear layer but the LM head)."""
    seed: int = 0
    """Seed of the adapters' random init (``A``; ``B`` starts at 0), independent of the global RNG: every rank and
    every run (a resumed one included) starts from the same adapters."""

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ValueError(f"model.lora.r must be a positive rank, got {self.r} (null turns LoRA off)")
        if self.alpha is not None and self.alpha <= 0:
            raise ValueError(f"model.lora.alpha must be positive (or null for 2 * r), got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.lora.dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ValueError("model.lora.target_modules is empty: name modules (e.g. [q_proj, v_proj]) or all-linear")

    @property
    def scaling(self) -> float:
        """``alpha / r``."""
        return (self.alpha if self.alpha is not None else 2.0 * self.r) / self.r


def apply_lora(model: nn.Module, cfg: LoRAConfig, causal_lm: bool = True) -> nn.Module:
    """Wrap ``model`` with fresh adapters (``B = 0``: the wrapped model computes exactly what ``model`` did); the base
    weights are frozen. ``causal_lm``: a ``*ForCausalLM`` (keeps ``generate``), else a bare backbone (critic)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    peft_cfg = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha if cfg.alpha is not None else 2 * cfg.r,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        task_type="CAUSAL_LM" if causal_lm else None,
    )
    tied_head = _tied_head_name(model) if causal_lm else None
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)  # peft's
        torch.manual_seed(cfg.seed)
        wrapped = get_peft_model(model, peft_cfg)
    if causal_lm:
        check_mergeable(wrapped, tied_head)
    return wrapped


def _tied_head_name(model: nn.Module) -> str | None:
    """The module name of a causal LM's output embedding when it shares its weight with the input embedding."""
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    if head is None or embed is None or head.weight is not embed.weight:
        return None
    return next((name for name, module in model.named_modules() if module is head), None)


def check_mergeable(model: nn.Module, tied_head: str | None) -> None:
    """Refuse adapters whose merged weights (``W + scaling · B A`` per ``nn.Linear``: what vLLM, the asynchronous
    rollout servers and the exported folder receive) cannot be built: adapted embeddings or ``Conv1D`` layers, and
    an adapted output head tied to the input embeddings (its merged weight would overwrite the embeddings)."""
    from peft.tuners.lora import Linear, LoraLayer

    from searchr1.errors import UserError

    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        short = name.removeprefix(_PEFT_PREFIX)
        if not isinstance(module, Linear) or module.fan_in_fan_out:
            raise UserError(
                f"model.lora.target_modules adapts {short} ({type(module.get_base_layer()).__name__}): only "
                "nn.Linear layers can carry adapters here (generation engines, async rollout servers and exports "
                "receive merged W + (alpha / r) B A per linear layer); leave it out of target_modules"
            )
        if tied_head is not None and short == tied_head:
            raise UserError(
                f"model.lora.target_modules adapts {short}, the output head tied to the input embeddings "
                "(tie_word_embeddings): its merged weight would overwrite the embeddings in the engines and the "
                "export; leave it out of target_modules"
            )


def is_lora(model: nn.Module | None) -> bool:
    """Whether ``model`` carries LoRA adapters (a ``peft`` model, possibly sharded with FSDP2)."""
    if model is None or "peft" not in sys.modules:  # no peft model can exist before peft is imported
        return False
    from peft import PeftModel

    return isinstance(model, PeftModel)


def lora_scaling(model: nn.Module) -> float:
    """``alpha / r`` of a ``peft`` model's adapter."""
    cfg = model.peft_config[ADAPTER]
    return cfg.lora_alpha / cfg.r


class AdaptersOff(nn.Module):
    """The frozen reference of a LoRA policy: the same module, run with its adapters disabled.

    No weights of its own. ``train``/``eval`` do not reach the policy (its mode belongs to the training loop), and
    under FSDP2 a forward is a collective over the policy's shards like any other.
    """

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, *args: Any, **kwargs: Any):
        with self.policy.disable_adapter():
            return self.policy(*args, **kwargs)

    def train(self, mode: bool = True) -> AdaptersOff:
        return self

    def to(self, *args: Any, **kwargs: Any) -> AdaptersOff:
        return self  # placement follows the policy


def frozen_reference(policy: nn.Module) -> nn.Module:
    """The KL reference of ``policy`` at its starting weights: the adapters-off view of a LoRA policy, else a frozen
    deep copy."""
    if is_lora(policy):
        return AdaptersOff(policy)
    import copy

    return copy.deepcopy(policy).eval().requires_grad_(False)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters that train (adapters and any head under LoRA; all of them otherwise)."""
    return [p for p in model.parameters() if p.requires_grad]


def drop_frozen_weights(state: dict[str, torch.Tensor] | None, models: dict[str, nn.Module | None]) -> None:
    """Remove from a checkpoint's ``state`` the entries of LoRA models that do not train (the frozen base, which is
    rebuilt from the starting weights at load), in place.

    Args:
        state: the Lightning checkpoint's ``state_dict`` (keys ``<prefix><parameter name>``).
        models: prefix → model (e.g. ``{"policy.": policy, "critic.": critic}``); models without adapters keep all.
    """
    if not state:
        return
    for prefix, model in models.items():
        if not _has_lora(model):
            continue
        keep = {prefix + name for name, p in model.named_parameters() if p.requires_grad}
        for key in [k for k in state if k.startswith(prefix) and k not in keep]:
            del state[key]


def _has_lora(model: nn.Module | None) -> bool:
    return model is not None and any(is_lora(m) for m in model.modules())


def merge_lora_stream(named: Iterable[tuple[str, torch.Tensor]], scaling: float) -> Iterator[tuple[str, torch.Tensor]]:
    """Merge a ``peft`` model's ``(name, tensor)`` stream into the plain model's: ``W + scaling · B A``, HF names.

    A LoRA layer's base weight and its ``lora_A``/``lora_B`` are held until all three have passed (one layer's
    worth of memory; the order of ``named_parameters``/``state_dict``), then yielded merged under the base name.

    Args:
        named: e.g. ``model.named_parameters()`` or ``state_dict().items()`` of a ``PeftModelForCausalLM``
            (names ``base_model.model.<hf name>``; a LoRA layer's ``<m>.base_layer.weight``, ``<m>.lora_A.default
            .weight`` (r, in), ``<m>.lora_B.default.weight`` (out, r)).
        scaling: ``alpha / r``.

    Yields:
        ``(hf_name, tensor)``: merged weights (float32 math, cast back to the base dtype) and untouched others.
    """
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in named:
        name = name.removeprefix(_PEFT_PREFIX)
        module, part = _lora_part(name)
        if part is None:
            yield name.replace(_BASE, "."), tensor  # a plain parameter, or a LoRA layer's base bias
            continue
        parts = pending.setdefault(module, {})
        parts[part] = tensor
        if len(parts) == 3:
            del pending[module]
            yield f"{module}.weight", _merged(parts["base"], parts["lora_A"], parts["lora_B"], scaling)
    if pending:
        raise ValueError(f"LoRA layers without all of base/lora_A/lora_B weights: {sorted(pending)[:3]}")


def merged_state(state: dict[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """The plain model's state dict (merged weights, HF names) from a ``peft`` model's ``state``, which is emptied
    as it goes: each entry leaves ``state`` when it enters the merge, so a gathered copy (a GPU or FSDP2 model's CPU
    state dict) is replaced layer by layer instead of living next to the merged one.

    Args:
        state: ``full_state_dict`` of a ``PeftModelForCausalLM`` (empty on FSDP2 ranks other than 0: returns ``{}``).
        scaling: ``alpha / r``.
    """

    def drain() -> Iterator[tuple[str, torch.Tensor]]:
        for name in list(state):
            yield name, state.pop(name)

    return dict(merge_lora_stream(drain(), scaling))


_PART_SUFFIXES = {
    "base": _BASE + "weight",
    "lora_A": f".lora_A.{ADAPTER}.weight",
    "lora_B": f".lora_B.{ADAPTER}.weight",
}


def _lora_part(name: str) -> tuple[str, str | None]:
    """``(module, part)`` of a LoRA layer's weight name (part ``base``/``lora_A``/``lora_B``), else ``(name, None)``."""
    for part, suffix in _PART_SUFFIXES.items():
        if name.endswith(suffix):
            return name[: -len(suffix)], part
    return name, None


def _merged(base: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scaling: float) -> torch.Tensor:
    """``base + scaling · b @ a``: (out, in) + (out, r) @ (r, in), computed in float32."""
    return (base.float() + scaling * (b.float() @ a.float())).to(base.dtype)


def adapter_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The adapter entries of a ``peft`` model's state dict (what ``save_pretrained`` of the adapter writes)."""
    return {k: v for k, v in state.items() if ".lora_" in k}
