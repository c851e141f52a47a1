"""What the rollout-correction metrics read on the warm start at top_p < 1, by meaning of the behaviour log-prob.

Samples GRPO groups from the shipped synthetic warm start (HF backend, in-process BM25 over the synthetic corpus,
the embedded default's rollout settings, temperature 1, ``--top-p``), recomputes the trainer's old log-probs with the
same weights, and reports ``mismatch_kl``, the sequence-level TIS mean weight and the sequence-level MIS dropped
share for two readings of the behaviour log-prob: the full-vocabulary ``log_softmax(logits / T)`` the backends
record, and the top-p-renormalised one (vLLM's ``processed_logprobs``, verl's default). There is no engine
mismatch here (same weights, same kernels), so every difference from (0, 1, 0) is the meaning, not the engine.

Prints one JSON line. ``python benchmarks/behaviour_logprobs.py [--prompts 16 --samples 8 --top-p 0.95]``.
"""

from __future__ import annotations

import argparse
import json

import torch

from searchr1.algorithms.correction import rollout_correction_weights
from searchr1.models import load_causal_lm, load_tokenizer
from searchr1.resources import package_path
from searchr1.retrieval import BM25Retriever
from searchr1.rollout import HFBackend, RolloutConfig, RolloutEngine
from searchr1.training.forward import batched_logprobs

WARM_START = "pkg:assets/synthetic_warm_start"
TASK = "pkg:assets/synthetic_task"


def nucleus_logprobs(model, batch, top_p: float) -> torch.Tensor:
    """(B, R) log-probs at temperature 1 renormalised over each step's top-p set."""
    with torch.no_grad():
        logits = model(batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids).logits
    probs = torch.softmax(logits[:, batch.prompt_length - 1 : -1].float(), dim=-1)  # (B, R, V)
    sorted_probs, _ = probs.sort(dim=-1, descending=True)
    kept = sorted_probs.masked_fill((sorted_probs.cumsum(-1) - sorted_probs) >= top_p, 0.0).sum(-1)  # (B, R)
    return torch.log(probs.gather(-1, batch.responses.unsqueeze(-1)).squeeze(-1) / kept) * batch.loss_mask


def readings(old: torch.Tensor, behaviour: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """mismatch_kl, sequence-TIS mean weight over tokens, sequence-MIS dropped token share (C = 2)."""
    tis, m = rollout_correction_weights(old, behaviour, mask, "tis", 2.0, "sequence")
    _, mis = rollout_correction_weights(old, behaviour, mask, "mis", 2.0, "sequence")
    return {
        "mismatch_kl": round(float(m["mismatch_kl"]), 5),
        "seq_tis_mean_weight": round(float((tis * mask).sum() / mask.sum()), 4),
        "seq_mis_dropped_share": round(float(mis["masked_share"]), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--top-p", type=float, default=0.95)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_causal_lm(package_path(WARM_START)).eval()
    tokenizer = load_tokenizer(package_path(WARM_START))
    retriever = BM25Retriever(corpus=package_path(f"{TASK}/corpus.jsonl"), stemmer="none")
    config = RolloutConfig(
        max_turns=2, max_response_tokens=32, max_obs_tokens=64, max_total_tokens=448, max_prompt_tokens=192,
        topk=1, temperature=1.0, top_p=args.top_p,
    )  # fmt: skip
    with open(package_path(f"{TASK}/train.jsonl"), encoding="utf-8") as f:
        questions = [json.loads(line)["question"] for line, _ in zip(f, range(args.prompts))]
    engine = RolloutEngine(HFBackend(model, tokenizer), retriever, tokenizer, config)
    batch = engine.generate_for_questions(questions, n=args.samples, seed=0)
    old = batched_logprobs(model, batch, 1.0, token_budget=8192)
    mask = batch.loss_mask
    out = {
        "top_p": args.top_p,
        "trajectories": len(batch),
        "policy_tokens": int(mask.sum()),
        "full_vocabulary": readings(old, batch.rollout_logprobs, mask),
        "top_p_renormalised": readings(old, nucleus_logprobs(model, batch, args.top_p), mask),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
