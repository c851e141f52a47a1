"""Rollout throughput: the multi-turn engine with BM25 retrieval vs one plain batched ``generate``.

Builds the tiny Qwen2, optionally warms it up (--sft-steps) with SFT on Search-R1-shaped trajectories (so it
actually searches and answers instead of emitting noise), runs ``RolloutEngine`` (HF backend, real
BM25 over the packaged HotpotQA sample) once to fix the workload, then times, interleaved ``--repeats``
times (best of each):

- the engine re-running exactly that rollout (same seed);
- ``matched``: one plain batched ``model.generate`` sampling, for every row, the number of tokens that row
  sampled in the rollout (the same token budget, with no retrieval, no observations and one turn) —
  ``ratio`` = engine tokens/s ÷ this;
- ``turn_by_turn``: the same engine with ``continuous_batching=False`` (a barrier per turn, each turn
  re-encodes its context) — ``turn_by_turn_ratio`` = its tokens/s (own sample count) ÷ matched;
- ``uniform``: one plain ``generate`` where every row samples the per-row mean (no ragged lengths at all,
  the most favourable plain baseline) — ``ratio_vs_uniform``.

- ``slow_retriever``: the engine with a retriever that answers each call ``--latency-ms`` later (default 50 and
  200 ms; a remote server's round trip), searches off the decode path (the default): ``slow_retriever_ratio``
  (at the first latency) = its tokens/s ÷ the same engine's with no added latency, same prompts and seed; and
  ``sync_slow_retriever_ratio``, the same with ``async_search=False`` (every row waits for each search call).

Prints ONE JSON line: tokens/s, the ratios, and where the engine's time goes.

``--backend vllm`` (in the ``.venv-vllm`` environment, with ``--policy-cache``) gives the slow-retriever figures with
a colocated vLLM engine instead of HF.

Usage: python benchmarks/rollout.py [--batch 32] [--max-turns 2] [--sft-steps 150]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from importlib import resources
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria

from searchr1.models import build_tiny_qwen2
from searchr1.protocols import build_prompt, observation
from searchr1.retrieval import BM25Retriever, format_passages
from searchr1.rollout import HFBackend, RolloutConfig, RolloutEngine
from searchr1.testing.latency import DelayedRetriever

ASSETS = resources.files("searchr1") / "assets" / "hotpotqa_dev_sample"


def load_questions() -> list[dict]:
    with (ASSETS / "questions.jsonl").open() as f:
        return [json.loads(line) for line in f if line.strip()]


def sft_texts(tokenizer, retriever, questions: list[dict]) -> list[str]:
    """Search-R1-shaped trajectories: prompt, search with the question's first words, observation, answer."""
    texts = []
    for q in questions:
        query = " ".join(q["question"].split()[:6])
        obs = observation(format_passages(retriever.search([query], 3)[0]))
        response = f"<think> I need to search. </think>\n<search> {query} </search>{obs}"
        response += f"<think> Found it. </think>\n<answer> {q['golden_answers'][0]} </answer>{tokenizer.eos_token}"
        texts.append(build_prompt(q["question"], tokenizer) + response)
    return texts


def warm_up_policy(model, tokenizer, texts: list[str], steps: int, batch: int = 8) -> None:
    """A few causal-LM steps so the random tiny model emits well-formed search/answer turns."""
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    enc = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    model.train()
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(texts), (batch,), generator=gen)
        ids, att = enc.input_ids[idx], enc.attention_mask[idx]
        loss = model(input_ids=ids, attention_mask=att, labels=ids.masked_fill(att == 0, -100)).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


class RowLengths(StoppingCriteria):
    """Stops row ``r`` once it has ``lengths[r]`` new tokens (plain ``generate`` keeps computing finished rows)."""

    def __init__(self, prompt_len: int, lengths: list[int]) -> None:
        self.prompt_len, self.lengths = prompt_len, torch.tensor(lengths)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        return (input_ids.shape[1] - self.prompt_len) >= self.lengths


def plain_generate(model, tokenizer, enc, lengths: list[int]) -> None:
    """One batched ``generate`` sampling exactly ``lengths[r]`` tokens for row ``r``."""
    longest = max(lengths)
    with torch.no_grad():
        model.generate(
            **enc, max_new_tokens=longest, min_new_tokens=longest, do_sample=True,
            pad_token_id=tokenizer.pad_token_id, stopping_criteria=[RowLengths(enc.input_ids.shape[1], lengths)],
        )  # fmt: skip


def load_policy(args: argparse.Namespace, retriever, questions: list[dict]):
    """The tiny Qwen2 after ``--sft-steps`` warm-up steps, reused from ``--policy-cache`` when it is there."""
    cache = Path(args.policy_cache) if args.policy_cache else None
    if cache is not None and (cache / "config.json").exists():
        model = AutoModelForCausalLM.from_pretrained(cache, dtype=torch.float32).eval()
        return model, AutoTokenizer.from_pretrained(cache)
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_qwen2(tmp, num_heads=args.num_heads, num_kv_heads=min(2, args.num_heads))
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    warm_up_policy(model, tokenizer, sft_texts(tokenizer, retriever, questions), args.sft_steps)
    if cache is not None:
        model.save_pretrained(cache)
        tokenizer.save_pretrained(cache)
    return model, tokenizer


def make_backend(args: argparse.Namespace, model, tokenizer):
    """HF on the in-memory policy, or a colocated in-process vLLM engine on the ``--policy-cache`` folder."""
    if args.backend == "hf":
        return HFBackend(model, tokenizer, batch_size=args.batch)
    if not args.policy_cache:
        raise SystemExit("--backend vllm reads the policy from disk: pass --policy-cache (it is written first)")
    from searchr1.rollout.backends.vllm import VLLMBackend

    return VLLMBackend(
        model=args.policy_cache, dtype="float32", max_model_len=1024, enforce_eager=True, cpu_kvcache_space_gib=1
    )


def latency_figures(backend, retriever, tokenizer, cfg, prompts, args) -> dict:
    """tokens/s with searches delayed by each latency ÷ tokens/s with none, async and synchronous search.

    Every (mode, latency) run is repeated ``--repeats`` times, interleaved, and its best time kept.
    """
    latencies = [float(x) for x in args.latency_ms.split(",") if x.strip()]
    runs = {}
    for async_search in (True, False):
        config = dataclasses.replace(cfg, async_search=async_search)
        for ms in [0.0, *latencies]:
            runs[async_search, ms] = RolloutEngine(backend, DelayedRetriever(retriever, ms / 1000), tokenizer, config)
    best = {key: float("inf") for key in runs}
    tokens = {}
    for _ in range(args.repeats):
        for key, engine in runs.items():
            start = time.perf_counter()
            tokens[key] = int(engine.generate(prompts, seed=0).loss_mask.sum())
            best[key] = min(best[key], time.perf_counter() - start)
    out: dict = {"latency_ms": latencies}
    for async_search in (True, False):
        tps = {ms: tokens[async_search, ms] / best[async_search, ms] for ms in [0.0, *latencies]}
        prefix = "" if async_search else "sync_"
        out[f"{prefix}tokens_per_s_by_latency"] = [round(tps[ms], 1) for ms in [0.0, *latencies]]
        out[f"{prefix}slow_retriever_ratio"] = round(tps[latencies[0]] / tps[0.0], 3) if latencies else None
        out[f"{prefix}slow_retriever_ratios"] = [round(tps[ms] / tps[0.0], 3) for ms in latencies]
    out["latency_runs_same_tokens"] = len({tokens[key] for key in runs if key[0]}) == 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-turns", type=int, default=2)
    parser.add_argument("--max-response-tokens", type=int, default=48)
    parser.add_argument("--sft-steps", type=int, default=0, help="warm-up SFT steps (slow on CPU)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--policy-cache", default=None, help="folder to save the warmed-up policy to / reuse it from")
    parser.add_argument("--latency-ms", default="50,200", help="comma-separated added latencies per search call")
    parser.add_argument("--latency-only", action="store_true", help="only the slow-retriever figures")
    parser.add_argument("--num-heads", type=int, default=4, help="heads of the tiny model (2: head size 32, for vLLM)")
    parser.add_argument(
        "--backend", choices=("hf", "vllm"), default="hf",
        help="generation backend of the latency figures (vllm: needs --policy-cache and the .venv-vllm env)",
    )  # fmt: skip
    args = parser.parse_args()
    torch.manual_seed(0)
    retriever = BM25Retriever(corpus=str(ASSETS / "corpus.jsonl"))
    questions = load_questions()
    t0 = time.perf_counter()
    model, tokenizer = load_policy(args, retriever, questions)
    sft_s = time.perf_counter() - t0

    cfg = RolloutConfig(
        max_turns=args.max_turns, max_response_tokens=args.max_response_tokens, max_obs_tokens=256, topk=3
    )
    backend = make_backend(args, model, tokenizer)
    engine = RolloutEngine(backend, retriever, tokenizer, cfg)
    prompts = [build_prompt(q["question"], tokenizer) for q in questions[: args.batch]]
    engine.generate(prompts[:4], seed=1)  # warm-up
    batch = engine.generate(prompts, seed=0)  # fixes the workload: every repeat re-samples exactly this
    sampled = int(batch.loss_mask.sum())
    enc = tokenizer(prompts, add_special_tokens=False, padding=True, return_tensors="pt")
    lengths = [sum(t.loss_mask) for t in batch.trajectories]
    per_row = -(-sampled // len(prompts))
    if args.latency_only or args.backend == "vllm":
        figures = latency_figures(backend, retriever, tokenizer, cfg, prompts, args)
        head = {"benchmark": "rollout", "backend": args.backend, "batch": len(prompts), "sampled_tokens": sampled}
        print(json.dumps({**head, **figures}))
        return
    turn_by_turn = RolloutEngine(backend, retriever, tokenizer, dataclasses.replace(cfg, continuous_batching=False))
    turn_tokens = int(turn_by_turn.generate(prompts, seed=0).loss_mask.sum())
    runs = {
        "engine": lambda: engine.generate(prompts, seed=0),
        "turn_by_turn": lambda: turn_by_turn.generate(prompts, seed=0),
        "matched": lambda: plain_generate(model, tokenizer, enc, lengths),
        "uniform": lambda: plain_generate(model, tokenizer, enc, [per_row] * len(prompts)),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    engine_batches = []
    for _ in range(args.repeats):  # interleaved, so load changes on this shared machine hit all of them alike
        for name, fn in runs.items():
            start = time.perf_counter()
            out = fn()
            times[name].append(time.perf_counter() - start)
            if name == "engine":
                engine_batches.append(out)
    latency = latency_figures(backend, retriever, tokenizer, cfg, prompts, args)
    wall, matched_wall, plain_wall = (min(times[k]) for k in ("engine", "matched", "uniform"))
    batch = engine_batches[times["engine"].index(wall)]  # its generation/retrieval split is reported
    m = batch.metrics()
    engine_tps, plain_tps = sampled / wall, per_row * len(prompts) / plain_wall
    matched_tps = sampled / matched_wall
    turn_tps = turn_tokens / min(times["turn_by_turn"])
    print(
        json.dumps(
            {
                "benchmark": "rollout",
                "device": "cpu",
                "threads": torch.get_num_threads(),
                "batch": len(prompts),
                "max_turns": args.max_turns,
                "sampled_tokens": sampled,
                "engine_tokens_per_s": round(engine_tps, 1),
                "matched_generate_tokens_per_s": round(matched_tps, 1),
                "uniform_generate_tokens_per_s": round(plain_tps, 1),
                "ratio": round(engine_tps / matched_tps, 3),
                "ratio_vs_uniform": round(engine_tps / plain_tps, 3),
                "turn_by_turn_ratio": round(turn_tps / matched_tps, 3),
                "engine_wall_s": round(wall, 3),
                "engine_generation_s": round(batch.generation_seconds, 3),
                "engine_retrieval_s": round(batch.retrieval_seconds, 4),
                "engine_other_s": round(wall - batch.generation_seconds - batch.retrieval_seconds, 4),
                "matched_wall_s": round(matched_wall, 3),
                "uniform_wall_s": round(plain_wall, 3),
                "sampled_per_row_min_max": [min(lengths), max(lengths)],
                "turns_mean": round(m["turns_mean"], 2),
                "searches_mean": round(m["searches_mean"], 2),
                "valid_action_ratio": round(m["valid_action_ratio"], 3),
                "finish_answer": round(m["finish_answer"], 3),
                "obs_token_share": round(m["obs_token_share"], 3),
                "sft_warmup_s": round(sft_s, 1),
                **latency,
            }
        )
    )


if __name__ == "__main__":
    main()
