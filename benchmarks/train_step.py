"""Training-step cost of ``SearchR1Module`` (GRPO and PPO) side by side with TRL's ``GRPOTrainer``.

Fixed workload: the tiny Qwen2 ``tiny:base`` (~10M params, built offline), 8 prompts × 4 samples, prompts
left-truncated to ≤128 tokens, one generation turn of ≤128 tokens (``max_turns=0``: the retriever is never
hit, so it is the same generate workload as TRL's), a cheap rule reward (``trl_grpo.rule_reward``). Each
measurement runs in its own subprocess — ours in this environment through a Lightning ``Trainer``, TRL's in
``.venv-trl`` (``bash tools/setup_trl_venv.sh``) — 1 warm-up + 5 timed steps; the two frameworks alternate
for ``--rounds`` rounds and medians are taken over all timed steps (the machine is shared). Prints ONE JSON
line: per-phase medians (rollout, old/ref/value passes, update), peak RSS, and
``step_time_ratio_vs_trl`` / ``peak_rss_ratio_vs_trl`` (ours ÷ TRL; ≤ 1 is better), per KL ``beta``.

Usage: python benchmarks/train_step.py [--rounds 2] [--steps 5] [--trl-python .venv-trl/bin/python] [--no-trl]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from trl_grpo import rss_mb, rule_reward  # noqa: E402  (shared by both frameworks)

MODEL = "tiny:base"
PHASES = ("rollout", "score", "old_ref_values", "advantages", "update")


def _identity(batch: list) -> list:
    return batch


def _TextBatches(loader):  # noqa: N802 - a class factory (lightning is imported lazily, in main)
    """A datamodule around ``loader``: batches of ``QAExample`` are text, moved nowhere (as ``QADataModule`` does)."""
    from lightning.pytorch import LightningDataModule

    class TextBatches(LightningDataModule):
        def train_dataloader(self):
            return loader

        def transfer_batch_to_device(self, batch, device, dataloader_idx):
            return batch

    return TextBatches()


def _reward(trajectory, golden_answers) -> float:
    return rule_reward(trajectory.response_text)


def questions(count: int) -> list:
    """The first ``count`` questions of the packaged HotpotQA sample as ``QAExample``s."""
    from searchr1.data.qa import QAExample

    path = ROOT / "searchr1" / "assets" / "hotpotqa_dev_sample" / "questions.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()][:count]
    return [
        QAExample(id=str(i), question=r["question"], golden_answers=r["golden_answers"], data_source="hotpotqa")
        for i, r in enumerate(rows)
    ]


def run_ours(args: argparse.Namespace) -> dict:
    """Worker: ``warmup + steps`` training steps of ``SearchR1Module`` under a Lightning ``Trainer``."""
    import torch
    from lightning.pytorch import Callback, Trainer
    from torch.utils.data import DataLoader

    from searchr1.retrieval.null import NoRetriever
    from searchr1.rollout import RolloutConfig
    from searchr1.training import SearchR1Module
    from searchr1.training.config import AlgorithmConfig

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rollout = RolloutConfig(
        max_turns=0, max_response_tokens=args.max_completion_length, max_prompt_tokens=args.max_prompt_length,
        max_total_tokens=args.max_prompt_length + args.max_completion_length + 1,
    )  # fmt: skip
    algorithm = AlgorithmConfig(estimator=args.estimator, n_samples=args.num_generations, kl_coef=args.beta)
    module = SearchR1Module(
        model_name_or_path=args.model, retriever=NoRetriever("the train-step benchmark must not search (max_turns=0)"),
        rollout=rollout, algorithm=algorithm, reward=_reward, policy_lr=1e-6, critic_lr=1e-5, seed=args.seed,
    )  # fmt: skip
    records: list[dict] = []
    hwm: dict[str, float] = {}
    _record_peak_after(module, ("rollout", "no_grad_passes", "compute_advantages"), hwm)

    class StepTimer(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            wall = time.perf_counter() - self.start
            m = trainer.callback_metrics
            row = {p: float(m[f"time/{p}"]) for p in PHASES if f"time/{p}" in m}
            row.update(step=wall, response_length=float(m.get("train/response_length", float("nan"))))
            hwm["update"] = rss_mb("VmHWM")
            row.update({f"peak_rss_after_{k}_mb": v for k, v in hwm.items()})
            records.append(row)

    batch = questions(args.prompts)
    total = args.warmup + args.steps
    trainer = Trainer(
        accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=total, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[StepTimer()],
        num_sanity_val_steps=0, limit_val_batches=0,
    )  # fmt: skip
    rss_start = rss_mb("VmRSS")
    loader = DataLoader([batch] * total, batch_size=None, collate_fn=_identity)  # one fixed batch per step
    trainer.fit(module, datamodule=_TextBatches(loader))
    timed = records[args.warmup :]
    out = {"framework": "ours", "estimator": args.estimator, "beta": args.beta}
    out.update({f"{k}_s": [r[k] for r in timed] for k in ("step", *PHASES) if all(k in r for r in timed)})
    out.update(
        response_length=[r["response_length"] for r in timed],
        rss_start_mb=round(rss_start, 1),
        peak_rss_after_mb={k.removeprefix("peak_rss_after_"): round(v, 1) for k, v in records[0].items() if "rss" in k},
        peak_rss_mb=round(rss_mb("VmHWM"), 1),
    )
    return out


def _record_peak_after(module, methods: tuple[str, ...], store: dict[str, float]) -> None:
    """Wrap ``module.<method>`` so that ``store[method]`` holds the process's peak RSS right after each call."""
    for name in methods:
        inner = getattr(module, name)

        def wrapped(*a, _inner=inner, _name=name, **kw):
            out = _inner(*a, **kw)
            store[_name] = rss_mb("VmHWM")
            return out

        setattr(module, name, wrapped)


def _subprocess_json(cmd: list[str], threads: int, name: str) -> dict:
    """Run one worker; its JSON result is also echoed to stderr (progress of a long run)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    print(name, lines[-1], file=sys.stderr, flush=True)
    return json.loads(lines[-1])


def prepare(args: argparse.Namespace, tmp: str) -> tuple[str, str]:
    """Build (or reuse) the tiny model folder and write the prompt strings TRL gets; returns both paths."""
    from searchr1.models import load_tokenizer, resolve_model_path
    from searchr1.protocols import build_prompt

    model_dir = resolve_model_path(MODEL)
    tokenizer = load_tokenizer(model_dir)
    prompts = [build_prompt(ex.question, tokenizer, True) for ex in questions(args.prompts)]
    # TRL 1.x has no max_prompt_length: give it the same left-truncated prompts our engine makes (max_prompt_tokens)
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"][-args.max_prompt_length :] for p in prompts]
    prompts = [tokenizer.decode(i, skip_special_tokens=False) for i in ids]
    path = os.path.join(tmp, "prompts.json")
    with open(path, "w") as f:
        json.dump(prompts, f)
    return model_dir, path


def common_flags(args: argparse.Namespace) -> list[str]:
    return [
        "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
        "--num-generations", str(args.num_generations), "--max-prompt-length", str(args.max_prompt_length),
        "--max-completion-length", str(args.max_completion_length),
    ]  # fmt: skip


def median(values: list[float]) -> float:
    return round(statistics.median(values), 4) if values else float("nan")


def summarize(runs: list[dict]) -> dict:
    """Pool the timed steps of several runs of one configuration: medians per phase, median peak RSS."""
    out: dict = {"runs": len(runs)}
    for key in runs[0]:
        if key.endswith("_s") and isinstance(runs[0][key], list):
            out[key.removesuffix("_s") + "_median_s"] = median([v for r in runs for v in r[key]])
    out["response_length_mean"] = round(statistics.fmean(v for r in runs for v in r["response_length"]), 1)
    out["peak_rss_mb"] = median([r["peak_rss_mb"] for r in runs])
    out["rss_start_mb"] = median([r["rss_start_mb"] for r in runs])
    return out


def orchestrate(args: argparse.Namespace) -> dict:
    trl_python = args.trl_python if not args.no_trl else None
    if trl_python and not Path(trl_python).exists():
        raise SystemExit(f"{trl_python} not found: run `bash tools/setup_trl_venv.sh` first, or pass --no-trl")
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, prompts_path = prepare(args, tmp)
        ours = [sys.executable, str(Path(__file__).resolve()), "--worker", "--model", model_dir, *common_flags(args)]
        for r in range(args.rounds):
            for beta in args.betas:
                jobs = [("ours_grpo", [*ours, "--estimator", "grpo", "--beta", str(beta)])]
                if trl_python:
                    trl = [trl_python, str(HERE / "trl_grpo.py"), "--model", model_dir, "--prompts", prompts_path]
                    jobs.append(("trl_grpo", [*trl, "--beta", str(beta), *common_flags(args)]))
                for name, cmd in jobs if r % 2 == 0 else jobs[::-1]:  # alternate who goes first
                    results.setdefault(f"{name}_beta{beta}", []).append(_subprocess_json(cmd, args.threads, name))
            if args.ppo:
                cmd = [*ours, "--estimator", "gae", "--beta", "0.001"]
                results.setdefault("ours_ppo_beta0.001", []).append(_subprocess_json(cmd, args.threads, "ours_ppo"))
    summary = {name: summarize(runs) for name, runs in results.items()}
    line: dict = {"benchmark": "train_step", "device": "cpu", "threads": args.threads, "model": MODEL}
    line.update(prompts=args.prompts, num_generations=args.num_generations, max_prompt_length=args.max_prompt_length)
    line.update(max_completion_length=args.max_completion_length, warmup=args.warmup, steps=args.steps)
    line["rounds"] = args.rounds
    for beta in args.betas:
        o, t = summary.get(f"ours_grpo_beta{beta}"), summary.get(f"trl_grpo_beta{beta}")
        if o and t:
            line[f"step_time_ratio_vs_trl_beta{beta}"] = round(o["step_median_s"] / t["step_median_s"], 3)
            line[f"peak_rss_ratio_vs_trl_beta{beta}"] = round(o["peak_rss_mb"] / t["peak_rss_mb"], 3)
    ratios = [line[k] for k in line if k.startswith("step_time_ratio_vs_trl_")]
    rss = [line[k] for k in line if k.startswith("peak_rss_ratio_vs_trl_")]
    if ratios:
        line["step_time_ratio_vs_trl"] = round(max(ratios), 3)  # the worse of the betas
        line["peak_rss_ratio_vs_trl"] = round(max(rss), 3)
    line["trl_version"] = next((r[0]["trl"] for n, r in results.items() if n.startswith("trl")), None)
    line["configs"] = summary
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help="(internal) run our steps in this process")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--estimator", default="grpo")
    parser.add_argument("--beta", type=float, default=0.0)
    parser.add_argument("--betas", type=float, nargs="+", default=[0.0, 0.001])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--max-prompt-length", type=int, default=128)
    parser.add_argument("--max-completion-length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trl-python", default=str(ROOT / ".venv-trl" / "bin" / "python"))
    parser.add_argument("--no-trl", action="store_true", help="only our framework")
    parser.add_argument("--no-ppo", dest="ppo", action="store_false", help="skip the PPO (critic) configuration")
    args = parser.parse_args()
    print(json.dumps(run_ours(args) if args.worker else orchestrate(args)))


if __name__ == "__main__":
    main()
