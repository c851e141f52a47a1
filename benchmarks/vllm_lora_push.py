"""A LoRA policy into vLLM: merged weights (our path) or vLLM's own LoRA adapters — which is faster, and by how much.

On a Qwen2 built offline (``--hidden``/``--layers``; LoRA r=16, alpha 32 on every linear layer, ``B`` drawn nonzero
so the adapters matter), in two vLLM engines (one process each, one after the other, same settings):

* ``merged``: a plain engine on the base model. (a) **merge + push**: ``VLLMBackend.sync_weights(iter_full_params(
  policy))`` — the trainer's colocated path (``merge_lora_stream`` then the in-place reload), all weights per update.
* ``lora``: an engine with ``enable_lora``. (b) **adapter push**: ``save_pretrained`` of the adapter (``/dev/shm``)
  then ``add_lora`` of it as a new adapter id (each update is a new version; the previous one is removed).
  Both pushes end with a 1-token request on the new weights (vLLM activates an added adapter at its first use).
* (c) generation throughput of each engine: greedy, ``--prompts`` x ``--tokens`` new tokens (``ignore_eos``), the
  merged engine plain, the LoRA engine with the adapter active on every request.

Each timing is the median of ``--repeats``; ``break_even_tokens_per_update``: the tokens generated between two
updates above which the merged path (faster decode) takes less time in all (0: merged is faster at any count).
Also checks that the two engines agree (greedy tokens; the max log-prob difference of the first prompt). Prints
one JSON line with the 1-minute load average (the machine is shared: compare the ratios of one run).
Run in vLLM's environment::

    PYTHONPATH=$PWD .venv-vllm/bin/python benchmarks/vllm_lora_push.py [--hidden 512 --layers 8 --repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

PROMPT_IDS = [[5 + (7 * i + j) % 1500 for j in range(24 + 4 * (i % 4))] for i in range(64)]


def build(folder: Path, args: argparse.Namespace) -> None:
    """The base model folder ``folder/base`` (each phase rebuilds the same adapters from seed 0)."""
    from searchr1.models import build_tiny_qwen2

    heads = args.hidden // 64  # head size 64: supported by vLLM's CPU attention
    build_tiny_qwen2(folder / "base", hidden_size=args.hidden, num_layers=args.layers, num_heads=heads,
                     num_kv_heads=max(1, heads // 4), intermediate_size=args.hidden * 11 // 4)  # fmt: skip


def _policy(path: Path, rank: int):
    """The LoRA policy (r=``rank``, alpha 2r, all linear layers) with ``B`` drawn N(0, 0.02^2) (seed 0)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    torch.manual_seed(0)
    policy = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear"))
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.02)
    return policy


def _throughput(llm, args: argparse.Namespace, lora_request=None) -> tuple[float, list[list[int]], list[float]]:
    """Median tokens/s of ``--repeats`` greedy generations; the first prompt's tokens and log-probs."""
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=args.tokens, temperature=0.0, ignore_eos=True, logprobs=0)
    prompts = [{"prompt_token_ids": ids} for ids in PROMPT_IDS[: args.prompts]]
    rates, outs = [], None
    for _ in range(args.repeats):
        llm.reset_prefix_cache()
        start = time.perf_counter()
        outs = llm.generate(prompts, params, lora_request=lora_request, use_tqdm=False)
        seconds = time.perf_counter() - start
        rates.append(sum(len(o.outputs[0].token_ids) for o in outs) / seconds)
    first = outs[0].outputs[0]
    logprobs = [float(step[tok].logprob) for tok, step in zip(first.token_ids, first.logprobs)]
    return statistics.median(rates), [list(o.outputs[0].token_ids) for o in outs], logprobs


def _first_token(llm, lora_request=None) -> None:
    """One 1-token request: the new weights are in use (vLLM activates an added adapter at its first request)."""
    from vllm import SamplingParams

    llm.generate([{"prompt_token_ids": PROMPT_IDS[0]}], SamplingParams(max_tokens=1, temperature=0.0),
                 lora_request=lora_request, use_tqdm=False)  # fmt: skip


def run_merged(folder: Path, args: argparse.Namespace) -> dict:
    """(a) merge + push with the trainer's path, (c) plain-engine throughput."""
    from searchr1.rollout.backends.vllm import VLLMBackend
    from searchr1.training.scaling import iter_full_params

    policy = _policy(folder / "base", args.rank)
    backend = VLLMBackend(str(folder / "base"), dtype="float32", max_model_len=512, enforce_eager=True,
                          cpu_kvcache_space_gib=1, enable_prefix_caching=True)  # fmt: skip
    pushes, loads = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        backend.sync_weights(iter_full_params(policy))
        loads.append(time.perf_counter() - start)
        _first_token(backend.llm)
        pushes.append(time.perf_counter() - start)
    rate, tokens, logprobs = _throughput(backend.llm, args)
    return {"push_seconds": statistics.median(pushes), "tokens_per_second": rate, "tokens": tokens,
            "logprobs": logprobs, "startup_seconds": backend.startup_seconds,
            "parts": {"merge_and_reload_seconds": statistics.median(loads)}}  # fmt: skip


def run_lora(folder: Path, args: argparse.Namespace) -> dict:
    """(b) adapter save + load as a new version, (c) throughput with the adapter active."""
    from vllm.lora.request import LoRARequest

    policy = _policy(folder / "base", args.rank)
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # in process, as VLLMBackend's engine
    start = time.perf_counter()
    import vllm

    llm = vllm.LLM(model=str(folder / "base"), dtype="float32", max_model_len=512, enforce_eager=True, seed=0,
                   enable_lora=True, max_lora_rank=args.rank, max_loras=1)  # fmt: skip
    startup = time.perf_counter() - start
    shm = Path(tempfile.mkdtemp(dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    pushes, request, parts = [], None, {"save_seconds": [], "add_lora_seconds": []}
    try:
        for version in range(1, args.repeats + 1):
            start = time.perf_counter()
            policy.save_pretrained(shm / f"v{version}")
            saved = time.perf_counter()
            new = LoRARequest(f"policy-v{version}", version, str(shm / f"v{version}"))
            llm.llm_engine.add_lora(new)  # loads the adapter into the worker's cache now
            if request is not None:
                llm.llm_engine.remove_lora(request.lora_int_id)
            parts["add_lora_seconds"].append(time.perf_counter() - saved)
            parts["save_seconds"].append(saved - start)
            _first_token(llm, new)
            pushes.append(time.perf_counter() - start)
            request = new
        rate, tokens, logprobs = _throughput(llm, args, request)
    finally:
        shutil.rmtree(shm, ignore_errors=True)
    return {"push_seconds": statistics.median(pushes), "tokens_per_second": rate, "tokens": tokens,
            "logprobs": logprobs, "startup_seconds": startup,
            "parts": {k: statistics.median(v) for k, v in parts.items()}}  # fmt: skip


def _phase(name: str, folder: Path, args: list[str]) -> dict:
    """Run one engine's phase in its own process (one vLLM engine per process); its JSON result."""
    cmd = [sys.executable, __file__, "--phase", name, "--folder", str(folder), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr[-3000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="OMP threads of the engines")
    parser.add_argument("--phase", choices=["merged", "lora"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args, rest = parser.parse_args(), sys.argv[1:]
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    if args.phase is not None:
        result = (run_merged if args.phase == "merged" else run_lora)(Path(args.folder), args)
        print(json.dumps(result))
        return
    folder = Path(tempfile.mkdtemp(prefix="vllm-lora-push-"))
    try:
        build(folder, args)
        merged, lora = _phase("merged", folder, rest), _phase("lora", folder, rest)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(report(merged, lora, args)))


def report(merged: dict, lora: dict, args: argparse.Namespace) -> dict:
    """The JSON line: settings, the two paths' medians and ratios, the agreement check, the load average."""
    out: dict = {"model": f"qwen2 hidden {args.hidden} x {args.layers} layers", "lora_rank": args.rank,
                 "repeats": args.repeats, "prompts": args.prompts, "new_tokens": args.tokens,
                 "threads": args.threads}  # fmt: skip
    for name, res in (("merged", merged), ("lora", lora)):
        if "error" in res:
            out[f"{name}_error"] = res["error"]
            continue
        out[f"{name}_push_seconds"] = round(res["push_seconds"], 4)
        out[f"{name}_tokens_per_second"] = round(res["tokens_per_second"], 1)
        out[f"{name}_startup_seconds"] = round(res["startup_seconds"], 1)
        out.update({f"{name}_{k}": round(v, 4) for k, v in res["parts"].items()})
    if "error" not in merged and "error" not in lora:
        out["push_ratio_merged_over_lora"] = round(merged["push_seconds"] / lora["push_seconds"], 2)
        out["throughput_ratio_merged_over_lora"] = round(merged["tokens_per_second"] / lora["tokens_per_second"], 3)
        # tokens generated per update above which merged (faster decode, maybe a slower push) wins overall
        per_token = 1 / lora["tokens_per_second"] - 1 / merged["tokens_per_second"]
        gap = merged["push_seconds"] - lora["push_seconds"]
        out["break_even_tokens_per_update"] = round(max(gap, 0.0) / per_token, 1) if per_token > 0 else None
        out["same_greedy_tokens_share"] = round(sum(a == b for a, b in zip(merged["tokens"], lora["tokens"]))
                                                / len(merged["tokens"]), 3)  # fmt: skip
        if merged["tokens"][0] == lora["tokens"][0]:  # the same tokens: compare their log-probs
            diff = (torch.tensor(merged["logprobs"]) - torch.tensor(lora["logprobs"])).abs()
            out["first_prompt_max_logprob_diff"] = float(diff.max())
    out["load_average_1m"] = os.getloadavg()[0]
    return out


if __name__ == "__main__":
    main()
