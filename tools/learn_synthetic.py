"""The learning experiment: synthetic knowledge task → tiny policy → short SFT → GRPO / PPO, with ablations.

For each seed: generate the task (``searchr1.data.synthetic``), build a tiny Qwen2 whose tokenizer is trained on
the task's corpus + prompt text, build gold SFT trajectories with the real rollout engine and BM25
(``searchr1.training.sft``), run a short SFT, then RL with ``configs/learn_synthetic_{grpo,ppo}.yaml``
(``searchr1 fit``'s CLI). Held-out EM (greedy, ``searchr1.evaluation.Evaluator``) is measured before RL (the SFT
model) and after RL, plus two ablations: the no-search pipeline (``EmptyRetriever`` in RL and evaluation) and RL
with retrieved-token masking off (``UnmaskedSearchR1Module``). Results: ``<out>/results.json`` (one row per run)
and ``<out>/summary.md``; curves of the first seed's runs: ``--plots DIR``.

    python tools/learn_synthetic.py --out runs/learn_synthetic --seeds 0 1 2 --plots docs/img
    python tools/learn_synthetic.py --out /tmp/ls --seeds 0 --variants grpo   # one run, ~3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from searchr1.data.prompts import build_prompt
from searchr1.data.synthetic import (
    HELDOUT_SOURCE,
    SyntheticTask,
    TaskFiles,
    generate_task,
    redraw_facts,
    teacher_turns,
    write_task,
)
from searchr1.data.synthetic import tokenizer_texts as synthetic_texts
from searchr1.rollout import RolloutConfig, RolloutEngine

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"grpo": ROOT / "configs" / "learn_synthetic_grpo.yaml", "ppo": ROOT / "configs" / "learn_synthetic_ppo.yaml"}
VARIANTS = ("grpo", "ppo", "grpo_nosearch", "grpo_nomask", "ppo_nosearch", "ppo_nomask")
ROLLOUT = RolloutConfig(
    max_turns=2, max_response_tokens=32, max_obs_tokens=64, max_total_tokens=448, max_prompt_tokens=192, topk=1
)
"""Rollout settings shared by SFT data building and evaluation (the RL configs hold the same values)."""


@dataclass
class Prepared:
    """One seed's task files, initial model and SFT data."""

    task: SyntheticTask
    files: TaskFiles
    init_dir: Path
    sft_data: Path


def prepare(
    out: Path,
    seed: int,
    guess_fraction: float = 0.0,
    sft_worlds: int = 1,
    preset: str = "small",
    vocab_size: int = 1024,
) -> Prepared:
    """Task files, a tiny model (tokenizer trained on the task) and the teacher's SFT trajectories for ``seed``.

    The teacher follows the gold search path, except on a seeded ``guess_fraction`` of the training questions
    where it answers at once with a random option of the right type (``searchr1.data.synthetic.teacher_turns``).
    With ``sft_worlds > 1`` the SFT set also covers the training questions in ``sft_worlds - 1`` worlds whose
    facts were drawn again (``redraw_facts``; each with its own corpus), so it cannot be fitted by memorising.
    """
    from searchr1.models.tiny import build_tiny_qwen2
    from searchr1.retrieval import BM25Retriever
    from searchr1.training.policy import TINY_PRESETS, load_tokenizer
    from searchr1.training.sft import TeacherBackend, build_sft_trajectories, save_trajectories

    task = generate_task(seed)
    files = write_task(task, out / "task")
    init_dir = build_tiny_qwen2(
        out / "init", texts=synthetic_texts(task), vocab_size=vocab_size, seed=seed, **_preset(TINY_PRESETS[preset])
    )
    tok = load_tokenizer(str(init_dir))
    trajs = []
    for k in range(sft_worlds):
        world = task if k == 0 else redraw_facts(task, 1000 * seed + k)
        corpus = files.corpus if k == 0 else write_task(world, out / f"sft_world{k}").corpus
        train = world.questions("train")
        turns = teacher_turns(world, train, guess_fraction, 1000 * seed + k)
        engine = RolloutEngine(TeacherBackend(turns, tok), BM25Retriever(corpus=str(corpus)), tok, ROLLOUT)
        prompts = [build_prompt(ex.question, tok) for ex in train]
        trajs += build_sft_trajectories(engine, train, prompts, keep=_kept)
    return Prepared(task, files, init_dir, save_trajectories(trajs, out / "sft_data.jsonl"))


def _kept(example, traj) -> bool:
    """SFT filter: a guess that answered, or a search path whose observations hold the answer."""
    from searchr1.training.sft import answer_was_retrieved

    return traj.finish_reason == "answer" and (traj.num_searches == 0 or answer_was_retrieved(example, traj))


def _preset(p: dict[str, int]) -> dict[str, int]:
    return {k: p[k] for k in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size")}


def run_sft(prep: Prepared, out_dir: Path, steps: int, lr: float, batch_size: int = 16, seed: int = 0) -> Path:
    """Short SFT from the initial model; the policy is saved to ``out_dir`` (``save_pretrained``)."""
    from lightning.pytorch import Trainer, seed_everything

    from searchr1.training.sft import SFTDataModule, SFTModule

    seed_everything(seed, verbose=False)
    module = SFTModule(str(prep.init_dir), lr=lr, warmup_steps=10, output_dir=str(out_dir))
    data = SFTDataModule(str(prep.sft_data), batch_size=batch_size, seed=seed)
    trainer = Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, data)
    return out_dir


def run_rl(
    prep: Prepared, start: Path, algo: str, out_dir: Path, steps: int, seed: int, search: bool, mask: bool
) -> Path:
    """RL (``configs/learn_synthetic_<algo>.yaml``) from ``start``; returns the exported policy folder."""
    from searchr1.cli import SearchR1CLI
    from searchr1.data.datamodule import QADataModule
    from searchr1.training.ablations import UnmaskedSearchR1Module
    from searchr1.training.module import SearchR1Module

    args = [
        "fit",
        "--config",
        str(CONFIGS[algo]),
        f"--seed_everything={seed}",
        f"--model.model_name_or_path={start}",
        f"--model.seed={seed}",
        f"--data.train_files=[{prep.files.train}]",
        f"--data.val_files=[{prep.files.heldout}]",
        f"--data.seed={seed}",
        f"--trainer.limit_train_batches={steps}",  # rollout steps (max_steps counts optimizer updates)
        f"--trainer.default_root_dir={out_dir}",
        f"--trainer.logger.init_args.save_dir={out_dir}",
    ]
    if search:
        args.append(f"--model.retriever.init_args.corpus={prep.files.corpus}")
    else:
        args.append('--model.retriever={"class_path": "searchr1.training.ablations.EmptyRetriever"}')
    sys.argv = sys.argv[:1]
    cls = SearchR1Module if mask else UnmaskedSearchR1Module
    cli = SearchR1CLI(cls, QADataModule, args=args, save_config_kwargs={"overwrite": True})
    policy_dir = out_dir / "policy"
    cli.model.policy.save_pretrained(policy_dir)
    cli.model.tokenizer.save_pretrained(policy_dir)
    return policy_dir


def evaluate(model_dir: Path, prep: Prepared, search: bool, limit: int | None = None) -> dict[str, float]:
    """Greedy held-out EM, searches, response tokens, and two reading checks of the policy in ``model_dir``.

    ``query_is_entity``: share of questions whose first search query is the asked person's name;
    ``distinct_answers``: how many different answers the policy gave over the questions (a policy that ignores
    the question gives one per question type).
    """
    from searchr1.evaluation import Evaluator
    from searchr1.retrieval import BM25Retriever
    from searchr1.rollout.backends.hf import HFBackend
    from searchr1.training.ablations import EmptyRetriever
    from searchr1.training.policy import load_causal_lm, load_tokenizer

    tok = load_tokenizer(str(model_dir))
    model = load_causal_lm(str(model_dir)).eval()
    retriever = BM25Retriever(corpus=str(prep.files.corpus)) if search else EmptyRetriever()
    config = RolloutConfig(**{**ROLLOUT.__dict__, "do_sample": False})
    evaluator = Evaluator(HFBackend(model, tok), tok, retriever, "search_r1", config, show_progress=False)
    examples = prep.task.questions("heldout")[:limit]
    with torch.no_grad():
        _, results = evaluator.run({HELDOUT_SOURCE: examples})
    n = len(results)
    pairs = list(zip(results, examples))
    out = {
        "em": sum(r.em for r in results) / n,
        "searches": sum(r.num_searches for r in results) / n,
        "response_tokens": sum(r.response_tokens for r in results) / n,
        "n": n,
        # does the policy read the question? share of questions whose first search names the asked entity
        "query_is_entity": sum(bool(r.queries) and r.queries[0] == ex.metadata["entity"] for r, ex in pairs) / n,
        "distinct_answers": len({r.answer for r in results}),
        "answered": sum(r.answer is not None for r in results) / n,
    }
    for hops in (1, 2):
        rows = [r for r, ex in zip(results, examples) if ex.metadata["hops"] == hops]
        if rows:
            out[f"em_{hops}hop"] = sum(r.em for r in rows) / len(rows)
    return out


def run_seed(
    out: Path,
    seed: int,
    variants: list[str],
    sft_steps: int,
    sft_lr: float,
    rl_steps: int,
    guess_fraction: float = 0.0,
    sft_worlds: int = 1,
) -> list[dict]:
    """The whole pipeline for one seed; one result row per evaluated model."""
    t0 = time.perf_counter()
    prep = prepare(out, seed, guess_fraction, sft_worlds)
    sft_dir = out / "sft"
    if not (sft_dir / "config.json").exists():  # a finished SFT of this seed is reused
        run_sft(prep, sft_dir, sft_steps, sft_lr, seed=seed)
    rows = [{"seed": seed, "run": "sft", "search": True, **evaluate(sft_dir, prep, True)}]
    rows.append({"seed": seed, "run": "sft", "search": False, **evaluate(sft_dir, prep, False)})
    rows[-1]["seconds"] = time.perf_counter() - t0
    _dump(out, rows)
    for variant in variants:
        algo, _, ablation = variant.partition("_")
        search, mask = ablation != "nosearch", ablation != "nomask"
        t0 = time.perf_counter()
        policy = run_rl(prep, sft_dir, algo, out / variant, rl_steps, seed, search, mask)
        rows.append({"seed": seed, "run": variant, "search": search, **evaluate(policy, prep, search)})
        rows[-1]["seconds"] = time.perf_counter() - t0
        _dump(out, rows)
    return rows


def _dump(out: Path, rows: list[dict]) -> None:
    (out / "results.json").write_text(json.dumps(rows, indent=1))


def summary_markdown(rows: list[dict]) -> str:
    """One table row per (seed, run): held-out EM (all / 1-hop / 2-hop), searches and response tokens."""
    lines = [
        "| seed | run | retriever | held-out EM | 1-hop EM | 2-hop EM | searches/q | response tokens |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {r['run']} | {'BM25' if r['search'] else 'empty'} | {r['em']:.3f} | "
            f"{r.get('em_1hop', float('nan')):.3f} | {r.get('em_2hop', float('nan')):.3f} | {r['searches']:.2f} | "
            f"{r['response_tokens']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/learn_synthetic", help="output folder (one sub-folder per seed)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", nargs="+", default=["grpo", "ppo", "grpo_nosearch", "grpo_nomask"])
    parser.add_argument("--sft-steps", type=int, default=100, help="100 steps learn the format only (docs/learning.md)")
    parser.add_argument("--sft-lr", type=float, default=2e-3)
    parser.add_argument("--rl-steps", type=int, default=12)
    parser.add_argument("--guess-fraction", type=float, default=0.0, help="share of SFT demos that guess, no search")
    parser.add_argument("--sft-worlds", type=int, default=1, help="SFT over this many worlds (facts redrawn)")
    parser.add_argument("--plots", default=None, help="write the first seed's RL curves (PNG) under this folder")
    args = parser.parse_args(argv)
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad:
        parser.error(f"unknown variants {bad}; valid: {', '.join(VARIANTS)}")
    out = Path(args.out)
    rows: list[dict] = []
    for seed in args.seeds:
        rows += run_seed(
            out / f"seed{seed}",
            seed,
            args.variants,
            args.sft_steps,
            args.sft_lr,
            args.rl_steps,
            args.guess_fraction,
            args.sft_worlds,
        )
        _dump(out, rows)
        (out / "summary.md").write_text(summary_markdown(rows))
    print(summary_markdown(rows))
    if args.plots:
        from searchr1.evaluation.plots import plot_run

        for variant in args.variants:
            target = Path(args.plots) / f"learn_synthetic_{variant}"
            shutil.rmtree(target, ignore_errors=True)
            plot_run(out / f"seed{args.seeds[0]}" / variant, target)


if __name__ == "__main__":
    main()
