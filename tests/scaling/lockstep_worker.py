"""FSDP2 on 2 CPU ranks (gloo) without Lightning: lockstep decoding, uneven micro-batches, equivalence, precision.

Run: ``python -m torch.distributed.run --standalone --nproc_per_node 2 lockstep_worker.py MODEL_DIR OUT [MODE]``
with MODE ``check`` (default) or ``no_lockstep`` (the same uneven update without rank agreement: must fail).
The process group times out after 20 s, so a broken invariant fails fast instead of hanging.

``check`` writes ``OUT/rank{r}.json`` with, on every rank:

* decoding: rank 0 decodes 1 prompt for 2 tokens, rank 1 decodes 3 prompts for 12 tokens with the FSDP2 policy
  (every forward a collective); the tokens must equal the unsharded model's greedy tokens;
* no-grad log-probs of per-rank batches with different padded lengths and micro-batch counts (2 vs 4) under
  FSDP2 vs the unsharded model;
* one update (one mini-batch, clipped at a small global norm, SGD) of the same global batch of 8 rows three
  ways: FSDP2 (each rank 4 rows, its own padded length, uneven micro-batch counts), DDP-style (plain model +
  gradient all-reduce) and one process over all 8 rows; full parameters and grad norms of each;
* the fraction of fp32 master weights an AdamW lr 1e-6 step changes under FSDP2 with bf16 compute, and of
  bf16 weights the same step changes on a pure-bf16 copy.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from transformers import AutoModelForCausalLM

from searchr1.distributed import Lockstep
from searchr1.models import load_tokenizer
from searchr1.rollout.backends.base import SamplingParams
from searchr1.rollout.backends.hf import HFBackend
from searchr1.training.batch import UpdateBatch
from searchr1.training.config import AlgorithmConfig
from searchr1.training.forward import batched_logprobs, response_logprobs
from searchr1.training.scaling import all_reduce_gradients, iter_full_params
from searchr1.training.sharding import fsdp2_shard, unsharded_for_generation
from searchr1.training.update import PolicyCriticUpdater, Trainee

ROWS, SHORT, LONG = 4, (4, 6), (9, 15)  # rows per rank; (prompt, response) padded lengths of rank 0 / rank 1
BUDGET = 20  # rank 0 (L = 10): 2 rows per micro-batch -> 2; rank 1 (L = 24): 1 row -> 4 micro-batches


def global_batch(vocab: int) -> UpdateBatch:
    """8 rows padded to (9, 15): rows 0-3 use at most (4, 6) of it (rank 0's), rows 4-7 the whole (rank 1's)."""
    g = torch.Generator().manual_seed(3)
    P, R = LONG
    ids = torch.randint(3, vocab, (2 * ROWS, P + R), generator=g)
    attention = torch.zeros(2 * ROWS, P + R, dtype=torch.long)
    for i in range(2 * ROWS):
        p_max, r_max = SHORT if i < ROWS else LONG
        p = int(torch.randint(1, p_max + 1, (1,), generator=g))
        r = r_max if i % ROWS == 0 else int(torch.randint(1, r_max + 1, (1,), generator=g))  # one row is full
        p = p_max if i % ROWS == 1 else p
        attention[i, P - p : P + r] = 1
    ids = ids * attention
    loss_mask = attention[:, P:].float()
    loss_mask[5, 2] = 0.0  # an observation token
    return UpdateBatch(
        input_ids=ids,
        attention_mask=attention,
        position_ids=(attention.cumsum(-1) - 1).clamp(min=0),
        loss_mask=loss_mask,
        advantages=torch.randn(2 * ROWS, R, generator=g) * loss_mask,
        old_logprobs=None,
    )


def rank_rows(batch: UpdateBatch, rank: int) -> UpdateBatch:
    """This rank's 4 rows, trimmed to its own padded lengths."""
    part = batch.select(torch.arange(rank * ROWS, (rank + 1) * ROWS))
    P, R = LONG
    p, r = SHORT if rank == 0 else LONG
    cols = torch.arange(P - p, P + r)
    return UpdateBatch(
        input_ids=part.input_ids[:, cols],
        attention_mask=part.attention_mask[:, cols],
        position_ids=part.position_ids[:, cols],
        loss_mask=part.loss_mask[:, :r],
        advantages=part.advantages[:, :r],
    )


def decode(model, tokenizer, rank: int, lockstep: Lockstep | None) -> list[list[int]]:
    prompts = [[5, 17, 29, 3]] if rank == 0 else [[7, 8, 9], [11, 4, 6, 2, 9], [13]]
    params = SamplingParams(max_new_tokens=2 if rank == 0 else 12, do_sample=False)
    backend = HFBackend(model, tokenizer, batch_size=2, lockstep=lockstep)
    return [out.token_ids for out in backend.generate(prompts, params)]


def update(model, data: UpdateBatch, sync=None, lockstep=None, lr: float = 0.1, optimizer_cls=torch.optim.SGD):
    cfg = AlgorithmConfig(
        estimator="grpo", n_samples=2, mini_batch_size=None, micro_token_budget=BUDGET,
        max_grad_norm=0.05, loss_agg="seq-mean-token-mean", kl_coef=0.0, entropy_coef=0.0,
    )  # fmt: skip
    optimizer = optimizer_cls(model.parameters(), lr=lr)
    stats = PolicyCriticUpdater(cfg, Trainee(model, optimizer), sync_gradients=sync, lockstep=lockstep).run(data, 0)
    return stats


def full(model) -> dict[str, torch.Tensor]:
    return {n: t.detach().float().clone() for n, t in iter_full_params(model)}


def main() -> None:
    model_dir, out, mode = sys.argv[1], Path(sys.argv[2]), (sys.argv[3] if len(sys.argv) > 3 else "check")
    dist.init_process_group("gloo", timeout=timedelta(seconds=20))
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    torch.manual_seed(0)
    tokenizer = load_tokenizer(model_dir)
    plain = AutoModelForCausalLM.from_pretrained(model_dir).float().train()
    plain.config.use_cache = False
    data = global_batch(plain.config.vocab_size)
    mine = rank_rows(data, rank)
    lockstep = None if mode == "no_lockstep" else Lockstep()
    if mode == "no_lockstep":  # uneven micro-batch counts (2 vs 4) with nothing agreeing on them
        update(fsdp2_shard(copy.deepcopy(plain), mesh), mine)
        raise SystemExit("no_lockstep: the uneven update completed (expected a collective mismatch)")

    sharded = fsdp2_shard(copy.deepcopy(plain), mesh)
    result: dict = {"expected_tokens": decode(plain, tokenizer, rank, None)}
    result["tokens_per_forward_gather"] = decode(sharded, tokenizer, rank, lockstep)
    with unsharded_for_generation(sharded):
        result["tokens_unsharded"] = decode(sharded, tokenizer, rank, lockstep)

    rows = mine  # the no-grad passes read its rows as a rollout's
    with torch.no_grad():
        lp_plain, _ = response_logprobs(
            plain, rows.input_ids, rows.attention_mask, rows.position_ids, rows.prompt_length
        )
    lp_sharded = batched_logprobs(sharded, rows, 1.0, BUDGET, lockstep)
    result["logprob_max_diff"] = float(((lp_sharded - lp_plain) * rows.loss_mask).abs().max())

    fsdp_stats = update(sharded, mine, lockstep=lockstep)
    ddp_model = copy.deepcopy(plain)
    ddp_stats = update(ddp_model, mine, sync=lambda m: all_reduce_gradients(m.parameters(), world), lockstep=lockstep)
    single = copy.deepcopy(plain)
    single_stats = update(single, data)  # one process over all 8 rows (2 mini-batches of 4, no lockstep)
    fsdp_w, ddp_w, single_w = full(sharded), full(ddp_model), full(single)
    result["fsdp_vs_single"] = max(float((fsdp_w[n] - single_w[n]).abs().max()) for n in single_w)
    result["ddp_vs_single"] = max(float((ddp_w[n] - single_w[n]).abs().max()) for n in single_w)
    result["moved"] = max(float((single_w[n] - full(plain)[n]).abs().max()) for n in single_w)
    result["grad_norm"] = {"fsdp": fsdp_stats["policy/grad_norm"], "ddp": ddp_stats["policy/grad_norm"]}
    result["grad_norm"]["single"] = single_stats["policy/grad_norm"]

    # the GPU precision setting on CPU: fp32 FSDP2 shards, bf16 compute, AdamW at lr 1e-6
    mixed = fsdp2_shard(copy.deepcopy(plain), mesh, param_dtype=torch.bfloat16)
    before = full(mixed)
    update(mixed, mine, lockstep=lockstep, lr=1e-6, optimizer_cls=torch.optim.AdamW)
    after = full(mixed)
    result["mixed_changed"] = sum(int((after[n] != before[n]).sum()) for n in before) / sum(
        t.numel() for t in before.values()
    )
    pure = copy.deepcopy(plain).to(torch.bfloat16)
    before = {n: p.detach().clone() for n, p in pure.named_parameters()}
    update(pure, mine, lr=1e-6, optimizer_cls=torch.optim.AdamW)
    result["pure_bf16_changed"] = sum(int((p.detach() != before[n]).sum()) for n, p in pure.named_parameters()) / sum(
        t.numel() for t in before.values()
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip interpreter finalisation (gloo threads; see fsdp_worker.py)


if __name__ == "__main__":
    main()
