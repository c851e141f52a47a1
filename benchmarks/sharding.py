"""FSDP2 vs DDP on 2 CPU ranks (gloo): per-rank parameter + gradient + optimizer bytes, and update-step time.

Each rank holds the tiny ``base`` Qwen2 preset (~10M parameters) and runs the real ``PolicyCriticUpdater`` (AdamW,
token-budget micro-batches, global-norm clipping) on a fixed per-rank batch, alternating FSDP2 and DDP-style steps
(plain model + gradient all-reduce) so both see the same machine load. Prints one JSON line (from rank 0):

    python benchmarks/sharding.py [--preset base] [--steps 6] [--rows 8] [--length 192]

Bytes are what this rank stores: under FSDP2 the local shards (``DTensor._local_tensor``) of parameters, gradients
and AdamW's two moments; under DDP full copies. Time is the median over ``--steps`` of one update (forward,
backward, gradient reduction, clipping, AdamW step).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import timedelta

import torch


def _local(t: torch.Tensor) -> torch.Tensor:
    return t._local_tensor if hasattr(t, "_local_tensor") else t


def state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Bytes of this rank's parameters, gradients and optimizer state tensors."""
    params = [p for p in model.parameters()]
    out = {
        "params": sum(_local(p).numel() * _local(p).element_size() for p in params),
        "grads": sum(_local(p.grad).numel() * _local(p.grad).element_size() for p in params if p.grad is not None),
    }
    out["optimizer"] = sum(
        _local(v).numel() * _local(v).element_size()
        for state in optimizer.state.values()
        for v in state.values()
        if torch.is_tensor(v) and v.dim() > 0
    )
    return out


def worker(args: argparse.Namespace) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from searchr1.distributed import Lockstep
    from searchr1.models import load_causal_lm
    from searchr1.training.batch import UpdateBatch
    from searchr1.training.config import AlgorithmConfig
    from searchr1.training.scaling import all_reduce_gradients
    from searchr1.training.sharding import fsdp2_shard
    from searchr1.training.update import PolicyCriticUpdater, Trainee

    dist.init_process_group("gloo", timeout=timedelta(seconds=120))
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(rank)
    plain = load_causal_lm(f"tiny:{args.preset}").float().train()
    vocab, P, R = plain.config.vocab_size, args.length // 2, args.length // 2
    ids = torch.randint(3, vocab, (args.rows, P + R))
    attention = torch.ones_like(ids)
    data = UpdateBatch(
        input_ids=ids,
        attention_mask=attention,
        position_ids=attention.cumsum(-1) - 1,
        loss_mask=torch.ones(args.rows, R),
        advantages=torch.randn(args.rows, R),
    )
    cfg = AlgorithmConfig(estimator="grpo", n_samples=2, micro_token_budget=2 * args.length, max_grad_norm=1.0)
    lockstep = Lockstep()
    runs = {}
    fsdp = fsdp2_shard(copy.deepcopy(plain), init_device_mesh("cpu", (world,)))
    runs["fsdp2"] = (fsdp, torch.optim.AdamW(fsdp.parameters(), lr=1e-5), None)
    ddp = copy.deepcopy(plain)
    sync = lambda m: all_reduce_gradients(m.parameters(), world)  # noqa: E731
    runs["ddp"] = (ddp, torch.optim.AdamW(ddp.parameters(), lr=1e-5), sync)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for step in range(args.steps + 1):  # step 0 warms up (allocations, optimizer state)
        for name, (model, optimizer, hook) in runs.items():
            dist.barrier()
            start = time.perf_counter()
            PolicyCriticUpdater(cfg, Trainee(model, optimizer), sync_gradients=hook, lockstep=lockstep).run(data, step)
            dist.barrier()
            if step:
                times[name].append(time.perf_counter() - start)
    result = {"preset": args.preset, "params": sum(p.numel() for p in plain.parameters()), "world_size": world}
    for name, (model, optimizer, _) in runs.items():
        result[f"{name}_bytes"] = state_bytes(model, optimizer)
        result[f"{name}_step_s"] = statistics.median(times[name])
    total = {k: sum(result[f"{k}_bytes"].values()) for k in runs}
    result["bytes_ratio_fsdp2_over_ddp"] = total["fsdp2"] / total["ddp"]
    result["step_time_ratio_fsdp2_over_ddp"] = result["fsdp2_step_s"] / result["ddp_step_s"]
    if rank == 0:
        print(json.dumps(result), flush=True)
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="base")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--length", type=int, default=192)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__]
    cmd += ["--worker", *sys.argv[1:]]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        sys.exit(proc.stderr[-3000:])
    print(lines[-1])


if __name__ == "__main__":
    main()
