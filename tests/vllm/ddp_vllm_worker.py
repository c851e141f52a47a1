"""Two DDP ranks on CPU, each with its own colocated in-process vLLM engine (launched by ``torchrun``).

Trains ``--steps`` GRPO steps with ``backend="vllm"``. After each step (the module has pushed the new weights)
every rank compares its engine's greedy ids on fixed prompts with greedy decoding of its HF policy (full forward
per token). Then it saves a checkpoint and validates it twice, on fresh modules: with the vLLM backend and with the
HF backend, recording every validation trajectory. Rank ``r`` writes ``OUT/rank{r}.json``.

Usage: torchrun --nproc_per_node 2 ddp_vllm_worker.py --model DIR --out DIR [--steps 2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer

from searchr1.data.datamodule import QADataModule
from searchr1.retrieval import BM25Retriever
from searchr1.rollout import RolloutConfig
from searchr1.rollout.backends.base import SamplingParams
from searchr1.training import AlgorithmConfig, SearchR1Module

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "hotpotqa_dev_sample"
PROMPTS = ["Who directed the film Ed Wood?", "<search> Scott Derrickson nationality </search>", "a"]
VLLM_KWARGS = dict(
    dtype="float32", max_model_len=1024, enforce_eager=True, cpu_kvcache_space_gib=1, cpu_omp_threads_bind="nobind"
)


@torch.no_grad()
def hf_greedy(model, prompt: list[int], steps: int) -> list[int]:
    ids = list(prompt)
    for _ in range(steps):
        ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt) :]


@torch.no_grad()
def hf_logprobs(model, prompt: list[int], continuation: list[int]) -> list[float]:
    logits = model(torch.tensor([prompt + continuation])).logits[0, len(prompt) - 1 : -1].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(continuation)[:, None])[:, 0].tolist()


class EngineCheck(Callback):
    """After each training step: the engine's greedy ids and log-probs against the live policy's and the start's."""

    def __init__(self, model_dir: str) -> None:
        from transformers import AutoModelForCausalLM

        self.start = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.steps: list[dict] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        tok = pl_module.tokenizer
        prompts = [tok(p, add_special_tokens=False).input_ids for p in PROMPTS]
        params = SamplingParams(max_new_tokens=12, do_sample=False)
        outs = pl_module.engine(True).backend.generate(prompts, params)
        was_training = pl_module.policy.training
        pl_module.policy.eval()
        step = {"engine": [o.token_ids for o in outs], "pushes": pl_module.engine_weights.pushes}
        step["policy"] = [hf_greedy(pl_module.policy, p, 12) for p in prompts]
        gap_policy = gap_start = 0.0
        for p, o in zip(prompts, outs):
            live = torch.tensor(hf_logprobs(pl_module.policy, p, o.token_ids))
            start = torch.tensor(hf_logprobs(self.start, p, o.token_ids))
            gap_policy = max(gap_policy, float((torch.tensor(o.logprobs) - live).abs().max()))
            gap_start = max(gap_start, float((torch.tensor(o.logprobs) - start).abs().max()))
        pl_module.policy.train(was_training)
        step["logprob_gap_policy"], step["logprob_gap_start"] = gap_policy, gap_start
        self.steps.append(step)


def module(model: str, backend: str, retriever) -> SearchR1Module:
    return SearchR1Module(
        model_name_or_path=model,
        retriever=retriever,
        rollout=RolloutConfig(
            max_turns=1, max_response_tokens=16, max_obs_tokens=48, max_total_tokens=512, max_prompt_tokens=400, topk=2
        ),
        algorithm=AlgorithmConfig(estimator="grpo", n_samples=2, kl_coef=0.0),
        backend=backend,
        backend_kwargs=VLLM_KWARGS if backend == "vllm" else {},
        policy_lr=1e-2,
        weight_decay=1.0,  # rewards are 0 on a random model (zero GRPO advantages): decay moves every weight
        use_chat_template=False,
    )


def trainer(root: Path, steps: int, callbacks=()) -> Trainer:
    return Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, limit_train_batches=steps, limit_val_batches=1,
        num_sanity_val_steps=0, logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, default_root_dir=root, callbacks=list(callbacks),
    )  # fmt: skip


def validate(model: str, backend: str, retriever, ckpt: Path, root: Path, data) -> dict:
    """Validate ``ckpt`` with ``backend``; returns the metrics and this rank's validation trajectories."""
    mod = module(model, backend, retriever)
    seen: list[list[int]] = []
    rollout = mod.rollout

    def recording_rollout(batch, train):
        out = rollout(batch, train)
        seen.extend(t.response_ids for t in out.trajectories)
        return out

    mod.rollout = recording_rollout
    run = trainer(root, 1)
    metrics = run.validate(mod, datamodule=data, ckpt_path=str(ckpt), verbose=False)[0]
    return {"metrics": metrics, "responses": seen}


def main() -> None:
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <pid>` prints every thread's stack
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    out = Path(args.out)
    retriever = BM25Retriever(corpus=str(DATA / "corpus.jsonl"))

    def data():
        return QADataModule(
            train_files=[str(DATA / "questions.jsonl")],
            val_files=[str(DATA / "questions.jsonl")],
            batch_size=2,
            max_val_samples=4,
        )

    check = EngineCheck(args.model)
    run = trainer(out / "fit", args.steps, [check])
    mod = module(args.model, "vllm", retriever)
    run.fit(mod, datamodule=data())
    ckpt = out / "trained.ckpt"
    run.save_checkpoint(ckpt)
    rank = run.global_rank
    result = {"steps": check.steps}
    for backend in ("vllm", "hf"):
        result[backend] = validate(args.model, backend, retriever, ckpt, out / backend, data())
    (out / f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
