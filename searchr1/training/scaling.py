"""Scaling out with Lightning's own strategies: startup checks, DDP gradient averaging, FSDP wrapping, full parameters.

Layout under every strategy: each rank rolls out its own shard of prompts (``QADataModule`` shards by rank) and
samples all ``n`` responses of a prompt itself, so GRPO groups never straddle ranks and advantages are computed
per rank; only gradients and metrics cross ranks.

* **DDP**: Lightning wraps the whole ``LightningModule`` in ``DistributedDataParallel``, but the update calls
  ``policy``/``critic`` directly and runs several backward passes per step (micro-batches, critic then policy),
  which DDP's reducer cannot follow (it expects one backward over *all* parameters per forward). So the reducer
  is kept out of those passes (:func:`ddp_reducer_off`) and :func:`all_reduce_gradients` averages each optimizer's
  accumulated gradients right before clipping and the step.
* **FSDP**: ``configure_model`` wraps policy, reference and critic each in its own FSDP root (:func:`fsdp_wrap`,
  decoder layers as units), so direct calls go through FSDP's forward; generation runs inside
  :func:`full_params_for_generation` (``summon_full_params`` of the root, layers unshard themselves).
* **DeepSpeed** ZeRO-2/3 (GRPO only: Lightning's DeepSpeed strategy drives one optimizer): ZeRO-3 parameters are
  gathered for generation and weight sync with ``deepspeed.zero.GatheredParameters``.

:func:`iter_full_params` yields ``(name, full tensor)`` layer by layer for a separate generation engine's
``sync_weights`` under each strategy, with the plain Hugging Face names (no wrapper prefixes).
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

STRATEGY_KINDS = ("single", "ddp", "fsdp", "deepspeed")
_WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.", "module.")


class SetupError(ValueError):
    """A configuration that cannot work, found before any model is loaded; the message says what to change."""


def strategy_kind(strategy: object) -> str:
    """``single``, ``ddp``, ``fsdp`` or ``deepspeed`` for a Lightning strategy object, a name (``"fsdp"``,
    ``"deepspeed_stage_3"``, ``"ddp_spawn"``...) or a CLI ``class_path`` (``"...FSDPStrategy"``)."""
    if not isinstance(strategy, str):
        class_path = getattr(strategy, "class_path", None)
        strategy = class_path if isinstance(class_path, str) else type(strategy).__name__
    name = strategy.rsplit(".", 1)[-1].lower()
    if "deepspeed" in name:
        return "deepspeed"
    if "fsdp" in name or "fullyshard" in name:
        return "fsdp"
    if "ddp" in name:
        return "ddp"
    return "single"


@dataclass
class ScaleSetup:
    """What the startup checks look at (read from the CLI config or from a Trainer + modules)."""

    strategy: str
    """Strategy kind (see :func:`strategy_kind`)."""
    accelerator: str
    """``cpu`` or ``gpu``."""
    backend: str = "hf"
    """Generation backend name."""
    estimator: str = "grpo"
    """Advantage estimator."""
    needs_critic: bool = False
    """Whether the estimator uses a value function."""
    critic_name_or_path: str | None = None
    """The critic checkpoint the user asked for, if any."""
    batch_size: int | None = None
    """Prompts per rank per step (None: unknown, e.g. no datamodule)."""
    n_samples: int = 1
    """Responses per prompt."""
    mini_batch_size: int | None = None
    """Sequences per rank per optimizer update (None: the whole rollout batch)."""


def setup_problems(s: ScaleSetup) -> list[str]:
    """Every problem of ``s`` as a sentence saying what to change (empty when the setup can run)."""
    problems = []
    if s.strategy in ("fsdp", "deepspeed") and s.accelerator == "cpu":
        problems.append(
            f"trainer.strategy={s.strategy} needs CUDA GPUs (Lightning's FSDP/DeepSpeed strategies do not run on CPU): "
            "on CPU use --trainer.strategy=ddp with --trainer.devices=N (or auto on one process); on GPUs set "
            "--trainer.accelerator=gpu"
        )
    if s.strategy == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        problems.append("trainer.strategy=deepspeed needs the deepspeed package: pip install -e '.[gpu]'")
    if s.strategy == "deepspeed" and s.needs_critic:
        problems.append(
            f"estimator {s.estimator!r} trains a critic with its own optimizer, but Lightning's DeepSpeed strategy "
            "supports a single optimizer: use --trainer.strategy=fsdp for PPO, or a critic-free estimator (grpo)"
        )
    if s.backend == "vllm" and importlib.util.find_spec("vllm") is None:
        where = (
            "on CPU run from the vLLM environment (bash tools/setup_vllm_venv.sh, then .venv-vllm/bin/searchr1)"
            if s.accelerator == "cpu"
            else "install it with pip install -e '.[vllm]'"
        )
        problems.append(f"model.backend=vllm but vllm is not installed: {where}, or set --model.backend=hf")
    if s.critic_name_or_path and not s.needs_critic:
        problems.append(
            f"model.critic_name_or_path is set but estimator {s.estimator!r} uses no critic: remove it, or set "
            "--model.algorithm.estimator=gae (PPO)"
        )
    if s.mini_batch_size is not None and s.batch_size is not None:
        per_rank = s.batch_size * s.n_samples
        if s.mini_batch_size > per_rank or per_rank % s.mini_batch_size:
            problems.append(
                f"model.algorithm.mini_batch_size={s.mini_batch_size} counts sequences per rank and must divide the "
                f"per-rank rollout batch data.batch_size x n_samples = {s.batch_size} x {s.n_samples} = {per_rank} "
                f"(every rank makes the same number of equal updates): use a divisor of {per_rank}, or null"
            )
    return problems


def check_setup(s: ScaleSetup) -> None:
    """Raise :class:`SetupError` listing every problem of ``s`` (see :func:`setup_problems`)."""
    problems = setup_problems(s)
    if problems:
        raise SetupError("; ".join(problems))


# ----------------------------------------------------------------------------------------------------------- DDP
def ddp_reducer_off(wrapped: nn.Module | None) -> contextlib.AbstractContextManager:
    """Context keeping DDP's reducer out of the backward passes inside it (a no-op unless ``wrapped`` is DDP).

    Lightning arms the reducer before every ``manual_backward`` (expecting gradients for *all* parameters) unless
    ``require_backward_grad_sync`` is False, which DDP's ``no_sync()`` sets; gradients are then averaged by
    :func:`all_reduce_gradients`.
    """
    from torch.nn.parallel import DistributedDataParallel

    return wrapped.no_sync() if isinstance(wrapped, DistributedDataParallel) else contextlib.nullcontext()


def all_reduce_gradients(params: Iterable[nn.Parameter], world_size: int, bucket_numel: int = 2**26) -> None:
    """Average the ``.grad`` of ``params`` over all ranks in place (DDP semantics: mean of per-rank gradients).

    A parameter without a gradient on this rank (no micro-batch reached it) takes part with zeros, so every rank
    issues the same collectives. Gradients are flattened into buckets of at most ``bucket_numel`` elements per
    dtype/device to keep the number of all-reduces small.
    """
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    buckets: dict[tuple[torch.dtype, torch.device], list[list[torch.Tensor]]] = {}
    for p in params:
        groups = buckets.setdefault((p.grad.dtype, p.grad.device), [[]])
        if groups[-1] and sum(g.numel() for g in groups[-1]) + p.grad.numel() > bucket_numel:
            groups.append([])
        groups[-1].append(p.grad)
    for groups in buckets.values():
        for grads in groups:
            flat = torch._utils._flatten_dense_tensors(grads)
            torch.distributed.all_reduce(flat)
            flat /= world_size
            for grad, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
                grad.copy_(synced)


# ---------------------------------------------------------------------------------------------------------- FSDP
def decoder_layer_classes(model: nn.Module) -> set[type[nn.Module]]:
    """Classes of the model's transformer blocks (Hugging Face ``_no_split_modules``), the FSDP wrapping units."""
    names = {n for m in model.modules() for n in (getattr(m, "_no_split_modules", None) or [])}
    return {type(m) for m in model.modules() if type(m).__name__ in names}


def fsdp_wrap(model: nn.Module) -> nn.Module:
    """Wrap ``model`` in its own FSDP root with one unit per decoder layer, inside Lightning's FSDP context.

    ``torch.distributed.fsdp.wrap.wrap`` uses the strategy's settings (sharding, mixed precision, device,
    ``use_orig_params``) inside ``FSDPStrategy``'s ``configure_model`` context and returns ``model`` unchanged
    anywhere else, so this is safe to call under every strategy.
    """
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy, wrap

    layers = decoder_layer_classes(model)
    return wrap(model, auto_wrap_policy=ModuleWrapPolicy(layers)) if layers else wrap(model)


def _is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FullyShardedDataParallel

    return isinstance(model, FullyShardedDataParallel)


def _is_zero3(model: nn.Module) -> bool:
    return any(hasattr(p, "ds_id") for p in model.parameters())


def full_params_for_generation(model: nn.Module) -> contextlib.AbstractContextManager:
    """Context in which ``model.generate`` sees full parameters (FSDP root / ZeRO-3); a no-op otherwise.

    FSDP: only the root's own parameters (embeddings, final norm, LM head) are gathered; each decoder-layer unit
    gathers its own in its forward, so peak memory stays one layer above the shards.
    """
    if _is_fsdp(model):
        from torch.distributed.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel.summon_full_params(model, recurse=False, writeback=False)
    if _is_zero3(model):
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)
    return contextlib.nullcontext()


def clean_param_name(name: str) -> str:
    """Drop wrapper segments (FSDP, activation checkpointing, ``torch.compile``, DDP) from a parameter name."""
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "") if prefix != "module." else name.removeprefix(prefix)
    return name


def _own_named_params(unit: nn.Module, prefix: str) -> Iterator[tuple[str, nn.Parameter]]:
    """Parameters of ``unit`` not inside a nested FSDP unit, with their names under ``prefix``."""
    yield from unit.named_parameters(prefix=prefix, recurse=False)  # names: f"{prefix}.{name}" ("name" at the top)
    for child_name, child in unit.named_children():
        if not _is_fsdp(child):
            yield from _own_named_params(child, f"{prefix}.{child_name}" if prefix else child_name)


def iter_full_params(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, full tensor)`` for every parameter of ``model``, gathered layer by layer, with plain HF names.

    Plain/DDP models yield their parameters as they are (detached, no copy). FSDP models gather one unit at a
    time (``summon_full_params(unit, recurse=False)``) and ZeRO-3 models one submodule at a time; those tensors
    are copies (the gathered storage is freed when the next layer is gathered). Every rank must iterate to the
    end (the gathers are collectives).
    """
    if _is_fsdp(model):
        yield from _iter_fsdp(model)
    elif _is_zero3(model):
        yield from _iter_zero3(model)
    else:
        for name, p in model.named_parameters():
            yield clean_param_name(name), p.detach()


def _iter_fsdp(root: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    from torch.distributed.fsdp import FullyShardedDataParallel

    seen: set[int] = set()  # a tied LM head is the embedding's Parameter: yielded once, as named_parameters() does
    for unit_name, unit in root.named_modules():
        if not _is_fsdp(unit):
            continue
        with FullyShardedDataParallel.summon_full_params(unit, recurse=False, writeback=False):
            for name, p in _own_named_params(unit, unit_name):
                if id(p) not in seen:
                    seen.add(id(p))
                    yield clean_param_name(name), p.detach().clone()


def _iter_zero3(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    import deepspeed

    seen: set[int] = set()
    for module_name, module in model.named_modules():
        params = [(n, p) for n, p in module.named_parameters(prefix=module_name, recurse=False) if id(p) not in seen]
        seen.update(id(p) for _, p in params)
        if not params:
            continue
        with deepspeed.zero.GatheredParameters([p for _, p in params], modifier_rank=None):
            for name, p in params:
                yield clean_param_name(name.removeprefix(".")), p.detach().clone()
