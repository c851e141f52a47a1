"""float32 vs bf16 autocast for a LoRA update step of SmolLM2-135M on CPU (the step ``tools/learn_smollm2.py`` runs).

Workload: ``--rows`` sequences of ``--prompt`` + ``--response`` random tokens through the LoRA-wrapped model (r=16 on
every linear layer, as ``configs/learn_smollm2_lora.yaml``), ``response_logprobs`` (the trainer's log-prob function)
then ``backward`` of the mean log-prob, split into micro-batches of ``--micro-token-budget`` padded tokens as the
trainer does. Each precision is timed ``--repeats`` times (after one warm-up), alternating; peak RSS is read from
a fresh subprocess per precision (``ru_maxrss``). Prints ONE JSON line: seconds per step of each precision,
``bf16_speedup`` (fp32 median ÷ bf16 median), the mean/max absolute log-prob difference bf16 vs fp32 (nats) and
the peak RSS of each.

Usage: python benchmarks/smollm2_precision.py --model .cache/smollm2 [--rows 8] [--prompt 160] [--response 96]
       [--micro-token-budget 2048] [--repeats 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import time

import torch


def build(model_dir: str):
    from searchr1.models import load_causal_lm
    from searchr1.models.lora import LoRAConfig, apply_lora

    return apply_lora(load_causal_lm(model_dir), LoRAConfig(r=16, alpha=32)).train()


def step(model, ids: torch.Tensor, prompt: int, bf16: bool, budget: int) -> tuple[float, torch.Tensor]:
    """One forward + backward over ``ids`` (rows, prompt + response) in micro-batches; (seconds, detached log-probs)."""
    from searchr1.training.forward import response_logprobs

    rows = max(1, budget // ids.shape[1])
    attn = torch.ones_like(ids)
    pos = torch.arange(ids.shape[1]).expand_as(ids)
    out = []
    t0 = time.perf_counter()
    for i in range(0, len(ids), rows):
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            lp, _ = response_logprobs(model, ids[i : i + rows], attn[i : i + rows], pos[i : i + rows], prompt)
        lp.mean().backward()
        out.append(lp.detach())
    return time.perf_counter() - t0, torch.cat(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--prompt", type=int, default=160)
    p.add_argument("--response", type=int, default=96)
    p.add_argument("--micro-token-budget", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", choices=["fp32", "bf16"], help="(internal) one precision, print its peak RSS in GB")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = build(a.model)
    ids = torch.randint(0, model.config.vocab_size, (a.rows, a.prompt + a.response))
    if a.only:
        step(model, ids, a.prompt, a.only == "bf16", a.micro_token_budget)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
        return
    times = {"fp32": [], "bf16": []}
    lps = {}
    for r in range(a.repeats + 1):
        for name in times:
            model.zero_grad(set_to_none=True)
            sec, lps[name] = step(model, ids, a.prompt, name == "bf16", a.micro_token_budget)
            if r:  # the first round warms up
                times[name].append(sec)
    diff = (lps["bf16"] - lps["fp32"]).abs()
    rss = {}
    for name in times:
        cmd = [sys.executable, __file__, "--model", a.model, "--rows", str(a.rows), "--prompt", str(a.prompt)]
        cmd += ["--response", str(a.response), "--micro-token-budget", str(a.micro_token_budget), "--only", name]
        cmd += ["--threads", str(a.threads)]
        rss[name] = float(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()[-1])
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({
        "rows": a.rows, "prompt": a.prompt, "response": a.response, "micro_token_budget": a.micro_token_budget,
        "fp32_s": med["fp32"], "bf16_s": med["bf16"], "bf16_speedup": med["fp32"] / med["bf16"],
        "logprob_abs_diff_mean": float(diff.mean()), "logprob_abs_diff_max": float(diff.max()),
        "logprob_fp32_mean": float(lps["fp32"].mean()),
        "peak_rss_gb_fp32": rss["fp32"], "peak_rss_gb_bf16": rss["bf16"], "times": times,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
