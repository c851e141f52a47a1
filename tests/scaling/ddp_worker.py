"""A tiny GRPO/PPO run under ``Trainer(accelerator="cpu", devices=2, strategy="ddp")`` (gloo), launched by the tests.

``--strategy fsdp2`` runs the same on FSDP2 (Lightning's ``ModelParallelStrategy``, 20 s process-group timeout);
``--num_nodes 2 --devices 1`` is the multi-node layout (launched by ``torchrun --nnodes 2`` or with SLURM variables);
``--async_staleness S`` trains on one rollout server process (``fit`` starts it) with ``max_staleness`` S;
``--nan_rank R`` makes the reward NaN on rank R at the second step (every rank must stop with the same message, written
to ``OUT/rank{r}.err``). The GPU tests reuse it with ``--accelerator gpu --strategy fsdp2|deepspeed_stage_2``.

Lightning's ``ddp`` launcher re-runs this script once per extra rank, so it must be a real file run with
``python``. Each rank writes what it saw to ``OUT/rank{r}.json`` (example ids and response texts per step, a
checksum of every policy tensor after each step) and its final policy weights to ``OUT/rank{r}.pt``; the test
compares the ranks' files.

``--stall_save K`` makes the K-th distributed-checkpoint save of each rank stop after writing its shards (it writes
``OUT/stalled.rank{r}`` with its pid and sleeps), so a test can SIGKILL both ranks in the middle of a sharded save.

Usage: python ddp_worker.py --model DIR --out DIR --steps N [--ckpt_every 1 [--save_last]] [--resume CKPT]
[--algo ppo] [--stall_save K]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from searchr1.data.datamodule import QADataModule
from searchr1.retrieval import BM25Retriever
from searchr1.rewards import em_reward
from searchr1.rollout import RolloutConfig
from searchr1.training import AlgorithmConfig, SearchR1Module
from searchr1.training.async_rollout import AsyncRolloutConfig
from searchr1.training.scaling import iter_full_params
from searchr1.training.strategies import FSDP2Strategy

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "hotpotqa_dev_sample"
# GRPO: one backward per step. PPO: critic and policy backwards in the same step, two PPO epochs × two
# mini-batches, and a token budget small enough to split mini-batches into several micro-batches.
ALGORITHMS = {
    "grpo": dict(estimator="grpo", n_samples=2, kl_coef=0.001, kl_kind="k3"),
    "ppo": dict(
        estimator="gae",
        n_samples=1,
        kl_coef=0.001,
        kl_kind="k1",
        kl_in_reward=True,
        ppo_epochs=2,
        mini_batch_size=1,
        micro_token_budget=200,
    ),
}


class RankRecorder(Callback):
    """Per step: this rank's example ids, response texts, and a checksum of each policy tensor after the update."""

    def __init__(self) -> None:
        self.steps: list[dict] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        rollout = outputs["rollout"]
        self.steps.append(
            {
                "batch_idx": batch_idx,
                "ids": [ex.id for ex in batch],
                "responses": [t.response_text for t in rollout.trajectories],
                "reward": float(outputs["scores"].mean()),
                "param_sums": _param_sums(pl_module),
            }
        )


def _param_sums(module: SearchR1Module) -> dict[str, float]:
    """Sum of every full policy/critic tensor (gathered under FSDP/ZeRO-3; every rank takes part)."""
    sums = {f"policy.{n}": float(t.double().sum()) for n, t in iter_full_params(module.policy)}
    if module.critic is not None:
        sums.update({f"critic.{n}": float(t.double().sum()) for n, t in iter_full_params(module.critic)})
    return sums


class NaNOnRank:
    """EM reward, but NaN for every sample of rank ``rank`` from its ``after``-th call on."""

    __name__ = "nan_on_rank"

    def __init__(self, rank: int, after: int) -> None:
        self.rank, self.after, self.calls = rank, after, 0

    def __call__(self, response: str, golden_answers) -> float:
        self.calls += 1
        if torch.distributed.get_rank() == self.rank and self.calls > self.after:
            return float("nan")
        return em_reward(response, golden_answers)


def stall_save(k: int, out: Path) -> None:
    """Make the ``k``-th sharded save of this rank hang after its shards are written (for a SIGKILL test)."""
    import lightning.fabric.strategies.fsdp as fsdp

    real, calls = fsdp._distributed_checkpoint_save, []

    def save(state, path):
        real(state, path)
        calls.append(path)
        if len(calls) == k:
            (out / f"stalled.rank{torch.distributed.get_rank()}").write_text(json.dumps({"pid": os.getpid()}))
            time.sleep(600)

    fsdp._distributed_checkpoint_save = save


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--ckpt_every", type=int, default=0)
    parser.add_argument("--resume", default=None)
    parser.add_argument("--algo", choices=sorted(ALGORITHMS), default="grpo")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--strategy", default="ddp")
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--num_nodes", type=int, default=1)
    parser.add_argument("--nan_rank", type=int, default=None)
    parser.add_argument("--save_last", action="store_true")
    parser.add_argument("--stall_save", type=int, default=0)
    parser.add_argument("--timeout_s", type=float, default=20.0, help="FSDP2 process-group timeout")
    parser.add_argument("--async_staleness", type=int, default=None, help="train on one rollout server process")
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.stall_save:
        stall_save(args.stall_save, out)
    module = SearchR1Module(
        model_name_or_path=args.model,
        retriever=BM25Retriever(corpus=str(DATA / "corpus.jsonl")),
        rollout=RolloutConfig(
            max_turns=2, max_response_tokens=16, max_obs_tokens=32, max_total_tokens=384, max_prompt_tokens=300, topk=1
        ),
        algorithm=AlgorithmConfig(
            **ALGORITHMS[args.algo], rollout_correction="tis" if args.async_staleness else "none"
        ),
        reward=NaNOnRank(args.nan_rank, after=4) if args.nan_rank is not None else "em",
        policy_lr=1e-3,
        seed=0,
        async_rollout=None if args.async_staleness is None else AsyncRolloutConfig(max_staleness=args.async_staleness),
    )
    data = QADataModule(train_files=[str(DATA / "questions.jsonl")], batch_size=2, seed=0)
    recorder = RankRecorder()
    callbacks: list[Callback] = [recorder]
    if args.ckpt_every:
        callbacks.append(
            ModelCheckpoint(
                dirpath=out / "ckpt",
                filename="{step}",
                every_n_train_steps=args.ckpt_every,
                save_top_k=-1,
                save_last=args.save_last,
            )
        )
    # async: a rank may wait on its rollouts (or rank 0's weight push) longer than the default before a collective
    timeout = args.timeout_s if args.async_staleness is None else max(args.timeout_s, 600.0)
    strategy = FSDP2Strategy(timeout_seconds=timeout) if args.strategy == "fsdp2" else args.strategy
    trainer = Trainer(
        accelerator=args.accelerator,
        devices=args.devices,
        num_nodes=args.num_nodes,
        strategy=strategy,
        precision=args.precision,
        max_epochs=1,
        limit_train_batches=args.steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=bool(args.ckpt_every),
        default_root_dir=out,
        callbacks=callbacks,
    )
    try:
        trainer.fit(module, data, ckpt_path=args.resume)
    except FloatingPointError as err:
        (out / f"rank{trainer.global_rank}.err").write_text(json.dumps({"message": str(err), "time": time.time()}))
        raise
    rank = trainer.global_rank
    record = {"world_size": trainer.world_size, "steps": recorder.steps}
    if args.async_staleness is not None:  # every rank calls it: the counts are summed over the ranks (collectives)
        record["async"] = module.async_summary()
    (out / f"rank{rank}.json").write_text(json.dumps(record))
    torch.save({n: t.cpu() for n, t in iter_full_params(module.policy)}, out / f"rank{rank}.pt")
    if torch.distributed.is_initialized():  # skip interpreter finalisation (gloo threads; see fsdp_worker.py)
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
