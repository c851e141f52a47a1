"""TRL side of ``benchmarks/train_step.py``: time ``trl.GRPOTrainer`` steps on the same model and workload.

Runs inside ``.venv-trl`` (``bash tools/setup_trl_venv.sh``), a separate process per measurement, and needs
nothing from ``searchr1``: the orchestrator passes the saved tiny-model folder and the exact prompt strings.
Prints ONE JSON line: per-step wall times, the time spent generating + scoring (TRL's
``_generate_and_score_completions``, which also holds its reference log-prob pass), peak RSS.

Configuration chosen to match one ``SearchR1Module`` GRPO step (see docs/performance.md for the differences left):
one optimizer step per generation batch (``per_device_train_batch_size = prompts × num_generations``,
``gradient_accumulation_steps=1``, ``steps_per_generation=1``, ``num_iterations=1``), generation with
transformers (no vLLM), temperature 1, no top-k/top-p, ``loss_type="bnpo"`` (token mean over the batch = our
``token-mean``), ε = 0.2 both sides, std-scaled group advantages, k3 KL as a loss with coefficient ``beta``,
AdamW (weight decay 0.01), constant learning rate, gradient clipping at 1.0.

Usage (normally launched by train_step.py):
    .venv-trl/bin/python benchmarks/trl_grpo.py --model DIR --prompts prompts.json --beta 0.001
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time


def rule_reward(text: str) -> float:
    """Cheap rule reward shared by both frameworks: share of distinct words in the first 32 words of ``text``.

    It varies between samples of a random model, so GRPO advantages are non-zero and the update does real work.
    """
    words = text.split()[:32]
    return len(set(words)) / max(len(words), 1)


def rss_mb(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process from /proc (MiB); falls back to ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="saved model + tokenizer folder")
    parser.add_argument("--prompts", required=True, help="JSON list of prompt strings (one step's prompts)")
    parser.add_argument("--beta", type=float, default=0.0)
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--max-prompt-length", type=int, default=128)
    parser.add_argument("--max-completion-length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run(args)


def run(args: argparse.Namespace) -> None:
    import tempfile

    import torch
    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    torch.set_num_threads(args.threads)
    with open(args.prompts) as f:
        prompts = json.load(f)
    total = args.warmup + args.steps
    dataset = Dataset.from_dict({"prompt": prompts * total})
    tokenizer = AutoTokenizer.from_pretrained(args.model, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    rss_start = rss_mb("VmRSS")

    def reward(completions, **kwargs) -> list[float]:
        return [rule_reward(c) for c in completions]

    out_dir = tempfile.mkdtemp(prefix="trl_grpo_")
    config = trl.GRPOConfig(**grpo_kwargs(args, len(prompts), total, out_dir))
    trainer = trl.GRPOTrainer(
        model=model, reward_funcs=[reward], args=config, train_dataset=dataset, processing_class=tokenizer
    )
    gen_times: list[float] = []
    inner = trainer._generate_and_score_completions

    def timed_generate_and_score(*a, **kw):
        start = time.perf_counter()
        try:
            return inner(*a, **kw)
        finally:
            gen_times.append(time.perf_counter() - start)

    trainer._generate_and_score_completions = timed_generate_and_score
    steps: list[float] = []
    lengths: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **kw):
            self.start = time.perf_counter()

        def on_step_end(self, *a, **kw):
            steps.append(time.perf_counter() - self.start)

        def on_log(self, _args, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                lengths.append(float(logs["completions/mean_length"]))

    trainer.add_callback(StepTimer())
    trainer.train()
    timed = slice(args.warmup, None)
    print(
        json.dumps(
            {
                "framework": "trl",
                "trl": trl.__version__,
                "transformers": transformers.__version__,
                "torch": torch.__version__,
                "beta": args.beta,
                "step_s": steps[timed],
                "generate_and_score_s": gen_times[timed],
                "response_length": lengths[timed],
                "rss_start_mb": round(rss_start, 1),
                "peak_rss_mb": round(rss_mb("VmHWM"), 1),
                "pid": os.getpid(),
            }
        )
    )


def grpo_kwargs(args: argparse.Namespace, num_prompts: int, total_steps: int, out_dir: str) -> dict:
    """``GRPOConfig`` arguments equivalent to one searchr1 GRPO step per optimizer step."""
    batch = num_prompts * args.num_generations
    return {
        "output_dir": out_dir,
        "per_device_train_batch_size": batch,
        "gradient_accumulation_steps": 1,
        "num_generations": args.num_generations,
        "max_completion_length": args.max_completion_length,
        "num_iterations": 1,
        "steps_per_generation": 1,
        "beta": args.beta,
        "loss_type": "bnpo",
        "epsilon": 0.2,
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": 0,
        "learning_rate": args.lr,
        "weight_decay": 0.01,
        "lr_scheduler_type": "constant",
        "max_grad_norm": 1.0,
        "max_steps": total_steps,
        "shuffle_dataset": False,
        "use_vllm": False,
        "use_cpu": True,
        "bf16": False,
        "fp16": False,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "seed": args.seed,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }


if __name__ == "__main__":
    main()
