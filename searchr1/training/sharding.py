"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for policy, reference and critic, and the lockstep agreements.

Under FSDP2 every rank holds ``1/N`` of each parameter (a ``DTensor`` shard, fp32: the master copy the optimizer
steps) and every forward all-gathers the layers it runs, in ``param_dtype`` (bf16 under ``bf16-mixed``), so every
forward is a collective. Multi-rank code therefore follows one rule (:class:`Lockstep`): every communicating
forward, backward, gather or export runs the same number of times on every rank, whatever each rank's data.
Ranks agree on counts and flags with one tiny all-reduce (:class:`~searchr1.distributed.Lockstep`) and pad with
zero-weight work.

Departure from verl: one module (``fully_shard`` per decoder layer, then the root) per model, no separate
rollout/actor/ref worker groups; the reference is sharded and never stepped, optionally offloaded to CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from searchr1.distributed import Lockstep
from searchr1.models.lora import AdaptersOff

__all__ = [
    "Lockstep",
    "fsdp2_shard",
    "full_state_dict",
    "is_fsdp2",
    "rank_lockstep",
    "shard_for_training",
    "unsharded_for_generation",
]

MIXED_PRECISION = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def decoder_layer_classes(model: nn.Module) -> set[type[nn.Module]]:
    """Classes of the model's transformer blocks (Hugging Face ``_no_split_modules``), the sharding units."""
    names = {n for m in model.modules() for n in (getattr(m, "_no_split_modules", None) or [])}
    return {type(m) for m in model.modules() if type(m).__name__ in names}


def fsdp2_shard(model: nn.Module, mesh, param_dtype: torch.dtype | None = None, cpu_offload: bool = False) -> nn.Module:
    """``fully_shard`` each decoder layer, then the root (embeddings, final norm, head), in place; returns ``model``.

    Args:
        model: a Hugging Face causal LM or ``ValueModel``; its parameters stay in their dtype (fp32 masters).
        mesh: the 1-D data-parallel ``DeviceMesh``.
        param_dtype: compute/all-gather dtype (``MixedPrecisionPolicy``); gradients are reduced in fp32. None:
            compute in the parameters' dtype.
        cpu_offload: keep the shards on CPU between uses (``CPUOffloadPolicy``; for the frozen reference).
    """
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    kwargs = {"mesh": mesh}
    if param_dtype is not None:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    if cpu_offload:
        kwargs["offload_policy"] = CPUOffloadPolicy()
    layers = decoder_layer_classes(model)
    for module in model.modules():
        if type(module) in layers:
            fully_shard(module, **kwargs)
    fully_shard(model, **kwargs)
    return model


def shard_for_training(mesh, precision: str, policy, reference, critic, reference_cpu_offload: bool = False):
    """Shard policy, reference and critic (those not None) over the data-parallel dim of ``mesh`` (FSDP2).

    Args:
        mesh: the ``ModelParallelStrategy`` mesh (``data_parallel`` x ``tensor_parallel``; tensor parallel must be 1).
        precision: the trainer's precision flag; ``bf16-mixed``/``16-mixed`` compute in that dtype over fp32 shards.

    Returns:
        ``(policy, reference, critic)``.
    """
    if mesh.mesh_dim_names != ("data_parallel", "tensor_parallel") or mesh["tensor_parallel"].size() != 1:
        raise ValueError(
            f"searchr1 shards with data-parallel FSDP2 only, got device mesh {mesh}: use --trainer.strategy=fsdp2 "
            "(or ModelParallelStrategy with tensor_parallel_size=1)"
        )
    dp, param_dtype = mesh["data_parallel"], MIXED_PRECISION.get(precision)
    policy = fsdp2_shard(policy, dp, param_dtype)
    critic = fsdp2_shard(critic, dp, param_dtype) if critic is not None else None
    if reference is not None and not isinstance(reference, AdaptersOff):  # a LoRA reference is the policy itself
        reference = fsdp2_shard(reference, dp, param_dtype, cpu_offload=reference_cpu_offload)
    return policy, reference, critic


def rank_lockstep(trainer, device: torch.device) -> Lockstep | None:
    """The rank agreement of a Trainer with several ranks (on ``device`` under NCCL, else CPU), else None."""
    if trainer is None or trainer.world_size <= 1:
        return None
    return Lockstep(device if torch.distributed.get_backend() == "nccl" else "cpu")


def is_fsdp2(model: nn.Module | None) -> bool:
    """Whether ``model`` was sharded with ``fully_shard``."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


@contextlib.contextmanager
def unsharded_for_generation(model: nn.Module) -> Iterator[None]:
    """Keep every FSDP2 unit of ``model`` gathered from its first forward until the block ends (decoding).

    Token-by-token decoding runs hundreds of forwards; without this each one would all-gather every layer again.
    The first forward inside still gathers (a collective, so ranks must reach it together: the decode loop runs in
    lockstep); the units are resharded on exit. A no-op for models not sharded with FSDP2.
    """
    if not is_fsdp2(model):
        yield
        return
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
            unit.set_reshard_after_forward(True, recurse=False)


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict on CPU: gathered under FSDP2 (a collective: call it on every rank; only rank 0 gets
    the tensors, other ranks an empty dict), else the module's own ``state_dict()``."""
    if not is_fsdp2(model):
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
