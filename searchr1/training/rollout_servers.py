"""Which rollout servers ``fit`` starts and how its weights reach them (``model.async_rollout``, docs/async.md).

``start_servers``: rank 0's local servers of ``server_kind`` (ours, or vLLM's OpenAI server with our worker
extension); ``weight_transport``: file, nccl or gloo; ``join_weight_group``: rank 0's end of the nccl/gloo group
that every vLLM worker joins. ``cfg`` is an ``AsyncRolloutConfig`` (not imported: that module imports this one).
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from searchr1.rollout.backends.vllm_transfer import GroupWeightSender
from searchr1.rollout.remote import RemoteServers, RolloutServerError, ServerProcesses
from searchr1.rollout.vllm_servers import VLLMServerProcesses, free_port


def join_weight_group(cfg: Any, module: Any, servers: RemoteServers) -> GroupWeightSender | None:
    """Rank 0's end of the nccl/gloo weight group, joined by every vLLM worker (None for file pushes and on other
    ranks); the ranks agree on success, so a failure stops all of them with rank 0's message."""
    transport, sender, message = weight_transport(cfg, module.device), None, None
    if transport in ("nccl", "gloo") and module.trainer.global_rank == 0:
        device = module.device if transport == "nccl" else torch.device("cpu")
        try:
            workers = sum(servers.worker_counts())  # type: ignore[attr-defined]
            port = free_port(cfg.weight_group_host)
            sender = GroupWeightSender(transport, cfg.weight_group_host, port, workers, device)
            servers.join_group(sender)  # type: ignore[attr-defined]
        except (RolloutServerError, OSError, RuntimeError) as err:
            message = f"the {transport} weight group with the vLLM servers failed: {type(err).__name__}: {err}"
    if module.lockstep is not None:
        module.lockstep.raise_together(message, RolloutServerError)
    elif message is not None:
        raise RolloutServerError(message)
    return sender


def weight_transport(cfg: Any, device: torch.device) -> str:
    """The weight transport: ``file`` for our HF server; for vLLM the configured one (``auto``: nccl on CUDA)."""
    if cfg.server_kind == "hf":
        return "file"
    if cfg.weight_transport == "auto":
        return "nccl" if device.type == "cuda" else "file"
    return cfg.weight_transport


def start_servers(cfg: Any, model: str, log_dir, seed: int) -> ServerProcesses:
    """Rank 0 starts ``cfg.servers`` local rollout servers of ``cfg.server_kind``."""
    if cfg.server_kind == "vllm":
        from searchr1.models import resolve_model_path

        return VLLMServerProcesses(
            cfg.servers, resolve_model_path(model), str(log_dir), cfg.vllm_python or sys.executable,
            [str(a) for a in cfg.vllm_args],
            cfg.server_devices, cfg.server_threads, seed,
        )  # fmt: skip
    if cfg.server_devices is not None:
        raise ValueError("async_rollout.server_devices is for server_kind: vllm; start GPU HF servers yourself (URLs)")
    return ServerProcesses(cfg.servers, model, str(log_dir), cfg.server_threads, cfg.server_batch_size)
