"""Scaling out with Lightning's own strategies: startup checks, DDP gradient averaging, FSDP wrapping, full parameters.

Layout under every strategy: each rank rolls out its own shard of prompts (``QADataModule`` shards by rank) and
samples all ``n`` responses of a prompt itself, so GRPO groups never straddle ranks and advantages are computed
per rank; only gradients and metrics cross ranks.

* **DDP**: Lightning wraps the whole ``LightningModule`` in ``DistributedDataParallel``, but the update calls
  ``policy``/``critic`` directly and runs several backward passes per step (micro-batches, critic then policy),
  which DDP's reducer cannot follow (it expects one backward over *all* parameters per forward). So the reducer
  is kept out of those passes (:func:`ddp_reducer_off`) and :func:`all_reduce_gradients` averages each optimizer's
  accumulated gradients right before clipping and the step.
* **FSDP2** (``--trainer.strategy=fsdp2``, :class:`~searchr1.training.strategies.FSDP2Strategy`):
  ``configure_model`` shards policy, reference and critic with ``fully_shard`` (one unit per decoder layer, then
  the root; fp32 shards, bf16 compute under ``bf16-mixed``); every forward is a collective, so rollouts,
  no-grad passes and updates run in lockstep (:mod:`searchr1.training.sharding`). Lightning's FSDP1
  ``FSDPStrategy`` is refused at startup: its per-shard gradient clipping and flat parameters break the update.
* **DeepSpeed** ZeRO-2/3 (GRPO only: Lightning's DeepSpeed strategy drives one optimizer): ZeRO-3 parameters are
  gathered for generation and weight sync with ``deepspeed.zero.GatheredParameters``.

:func:`iter_full_params` yields ``(name, full tensor)`` layer by layer for a separate generation engine's
``sync_weights`` under each strategy, with the plain Hugging Face names (no wrapper prefixes).
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

_WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.", "module.")
LOW_PRECISION_NAMES = ("bf16-true", "bf16", "16-true", "16", "half")


class SetupError(ValueError):
    """A configuration that cannot work, found before any model is loaded; the message says what to change."""


def strategy_kind(strategy: object) -> str:
    """``single``, ``ddp``, ``fsdp2``, ``fsdp`` (FSDP1) or ``deepspeed`` for a Lightning strategy object, a name
    (``"fsdp2"``, ``"deepspeed_stage_3"``, ``"ddp_spawn"``...) or a CLI ``class_path`` (``"...FSDP2Strategy"``)."""
    if not isinstance(strategy, str):
        class_path = getattr(strategy, "class_path", None)
        strategy = class_path if isinstance(class_path, str) else type(strategy).__name__
    name = strategy.rsplit(".", 1)[-1].lower()
    if "deepspeed" in name:
        return "deepspeed"
    if "fsdp2" in name or "modelparallel" in name:
        return "fsdp2"
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
    precision: str = "32-true"
    """Lightning precision flag."""
    dtype: str | None = None
    """The module's parameter dtype option (None/float32: fp32 master weights)."""
    policy_lr: float | None = None
    """Policy learning rate (must be > 0; also for the pure low-precision warning)."""
    critic_lr: float | None = None
    """Critic learning rate (must be > 0 when a critic is trained)."""
    gpus_visible: int | None = None
    """CUDA devices this process sees (None: not checked)."""
    lora: bool = False
    """LoRA adapters train (fp32 even over a bf16 base, which never steps) instead of all weights."""


def setup_problems(s: ScaleSetup) -> list[str]:
    """Every problem of ``s`` as a sentence saying what to change (empty when the setup can run)."""
    bad_values = _value_problems(s)
    problems = list(bad_values)
    if s.strategy == "fsdp":
        problems.append(
            "trainer.strategy=fsdp is Lightning's FSDP1 FSDPStrategy, which searchr1 does not support (flat "
            "parameters, per-shard gradient clipping): use --trainer.strategy=fsdp2 (FSDP2 through Lightning's "
            "ModelParallelStrategy, class searchr1.training.strategies.FSDP2Strategy; runs on GPUs and CPU ranks)"
        )
    if s.strategy == "deepspeed" and s.accelerator == "cpu":
        problems.append(
            "trainer.strategy=deepspeed needs CUDA GPUs (Lightning's DeepSpeed strategy does not run on CPU): on CPU "
            "use --trainer.strategy=fsdp2 or ddp with --trainer.devices=N; on GPUs set --trainer.accelerator=gpu"
        )
    if s.strategy == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        problems.append("trainer.strategy=deepspeed needs the deepspeed package: pip install -e '.[gpu]'")
    if s.strategy == "deepspeed" and s.needs_critic:
        problems.append(
            f"estimator {s.estimator!r} trains a critic with its own optimizer, but Lightning's DeepSpeed strategy "
            "supports a single optimizer: use --trainer.strategy=fsdp2 for PPO, or a critic-free estimator (grpo)"
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
    if s.mini_batch_size is not None and s.batch_size is not None and not bad_values:
        per_rank = s.batch_size * s.n_samples
        if s.mini_batch_size > per_rank or per_rank % s.mini_batch_size:
            problems.append(
                f"model.algorithm.mini_batch_size={s.mini_batch_size} counts sequences per rank and must divide the "
                f"per-rank rollout batch data.batch_size x n_samples = {s.batch_size} x {s.n_samples} = {per_rank} "
                f"(every rank makes the same number of equal updates): use a divisor of {per_rank}, or null"
            )
    return problems


def _value_problems(s: ScaleSetup) -> list[str]:
    """Values that cannot be right whatever the rest (checked first: later checks would misreport them)."""
    problems = []
    if s.accelerator == "gpu" and s.gpus_visible == 0:
        problems.append(
            "this config runs on GPUs (trainer.accelerator=gpu) but no CUDA GPU is visible here: run it on a GPU "
            "machine, or try the CPU configs (searchr1 fit with no --config, or -c configs/tiny_cpu.yaml)"
        )
    for name, value in (("data.batch_size", s.batch_size), ("model.algorithm.n_samples", s.n_samples)):
        if value is not None and value < 1:
            problems.append(f"{name}={value} must be a positive count: use 1 or more")
    if s.mini_batch_size is not None and s.mini_batch_size < 1:
        problems.append(f"model.algorithm.mini_batch_size={s.mini_batch_size} must be positive (or null: one update)")
    lrs = [("model.policy_lr", s.policy_lr)] + ([("model.critic_lr", s.critic_lr)] if s.needs_critic else [])
    for name, lr in lrs:
        if lr is not None and not lr > 0:
            problems.append(f"{name}={lr:g} must be a positive learning rate (Search-R1 uses 1e-6 for the policy)")
    return problems


def low_precision_warning(s: ScaleSetup) -> str | None:
    """The startup warning for pure low-precision weights (no fp32 master copy), or None."""
    pure = str(s.precision) in LOW_PRECISION_NAMES or (s.dtype in ("bfloat16", "float16") and not s.lora)
    if not pure:
        return None
    lr = f"{s.policy_lr:g}" if s.policy_lr is not None else "the policy lr"
    rounds = f" (|w| > {s.policy_lr * 256:.1e})" if s.policy_lr is not None else ""
    return (
        f"pure low-precision training (precision={s.precision}, dtype={s.dtype}): parameters and optimizer state "
        f"have no fp32 master copy, so an AdamW step of about lr={lr} is below half the bf16 spacing of most "
        f"weights{rounds} and rounds away; use --trainer.precision=bf16-mixed with float32 parameters (dtype: null) "
        "for fp32 master weights with bf16 compute"
    )


def check_setup(s: ScaleSetup) -> None:
    """Raise :class:`SetupError` listing every problem of ``s`` (see :func:`setup_problems`); warn once about
    pure low-precision weights."""
    problems = setup_problems(s)
    if problems:
        raise SetupError("; ".join(problems))
    warning = low_precision_warning(s)
    if warning:
        from lightning.pytorch.utilities import rank_zero_warn

        rank_zero_warn(warning)


# ----------------------------------------------------------------------------------------------------------- DDP
def ddp_reducer_off(wrapped: nn.Module | None) -> contextlib.AbstractContextManager:
    """Context keeping DDP's reducer out of the backward passes inside it (a no-op unless ``wrapped`` is DDP).

    Lightning arms the reducer before every ``manual_backward`` (expecting gradients for *all* parameters) unless
    ``require_backward_grad_sync`` is False, which DDP's ``no_sync()`` sets; gradients are then averaged by
    :func:`all_reduce_gradients`.
    """
    from torch.nn.parallel import DistributedDataParallel

    return wrapped.no_sync() if isinstance(wrapped, DistributedDataParallel) else contextlib.nullcontext()


def gradient_sync_hook(trainer) -> Callable[[nn.Module], None] | None:
    """The updater's gradient hook: under DDP with several ranks, average a model's accumulated gradients (the
    reducer is kept out of the update's many backwards); None where the strategy reduces itself (FSDP2, DeepSpeed)
    or with one process."""
    if trainer is None or trainer.world_size <= 1 or strategy_kind(trainer.strategy) != "ddp":
        return None
    return lambda model: all_reduce_gradients(model.parameters(), trainer.world_size)


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


# ------------------------------------------------------------------------------------------------- FSDP2 / ZeRO-3
def _is_zero3(model: nn.Module) -> bool:
    return any(hasattr(p, "ds_id") for p in model.parameters())


def full_params_for_generation(model: nn.Module) -> contextlib.AbstractContextManager:
    """Context in which decoding sees full parameters: FSDP2 units stay gathered after their first forward,
    ZeRO-3 parameters are gathered; a no-op otherwise."""
    from searchr1.training.sharding import is_fsdp2, unsharded_for_generation

    if is_fsdp2(model):
        return unsharded_for_generation(model)
    if _is_zero3(model):
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)
    return contextlib.nullcontext()


def clean_param_name(name: str) -> str:
    """Drop wrapper segments (FSDP, activation checkpointing, ``torch.compile``, DDP) from a parameter name."""
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "") if prefix != "module." else name.removeprefix(prefix)
    return name


def iter_full_params(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, full tensor)`` for every parameter of ``model``, gathered one at a time, with plain HF names.

    Plain/DDP models yield their parameters as they are (detached, no copy). FSDP2 models all-gather one
    parameter at a time (``DTensor.full_tensor``) and ZeRO-3 models one submodule at a time; those tensors are
    copies. Every rank must iterate to the end (the gathers are collectives). A LoRA model yields its merged
    weights (:func:`~searchr1.models.lora.merge_lora_stream`).
    """
    from searchr1.models.lora import is_lora, lora_scaling, merge_lora_stream

    params = _iter_zero3(model) if _is_zero3(model) else _iter_plain(model)
    if is_lora(model):  # the engine receives merged weights (W + scale * B A) under the plain model's names
        params = merge_lora_stream(params, lora_scaling(model))
    yield from params


def _iter_plain(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    from torch.distributed.tensor import DTensor

    for name, p in model.named_parameters():
        full = p.full_tensor() if isinstance(p, DTensor) else p
        yield clean_param_name(name), full.detach()


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
