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
    python tools/learn_synthetic.py --out runs/learn_tool_call --seeds 0 --variants grpo --protocol tool_call
    python tools/learn_synthetic.py --prepare-sft   # only the inputs of configs/sft_synthetic.yaml (~5 min, 2 cores)
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from learn_synthetic_stages import (  # the stages (a sibling module); learn_smollm2 imports them from here
    DEFAULT_GUESS_FRACTION,
    ROLLOUTS,
    VARIANTS,
    Prepared,
    constant_baseline,
    evaluate,
    fraction_suffix,
    guess_data,
    prepare,
    run_rl,
    run_sft,
)

from searchr1.protocols import get_protocol
from searchr1.rollout import RolloutConfig, RolloutEngine


@dataclass
class Plan:
    """The experiment's settings (``main``'s flags); see docs/learning.md for the measured choices.

    ``calibrate``: choose stage 2's guess fraction per seed (:func:`calibrate_warm_start`) so that the warm start's
    greedy policy searches on at most ``greedy_search_max`` of the training questions while its T = 1 samples
    search on a share inside ``search_rate`` (RL must see searches to learn that they pay); ``guess_fraction`` is
    the first fraction tried (or the only one, without ``calibrate``).
    """

    variants: list[str]
    read_steps: int = 1200
    read_lr: float = 1e-3
    sft_steps: int = 60
    sft_lr: float = 1e-3
    rl_steps: int = 30
    guess_fraction: float = DEFAULT_GUESS_FRACTION
    sft_worlds: int = 8
    protocol: str = "search_r1"
    calibrate: bool = True
    search_rate: tuple[float, float] = (0.2, 0.5)
    greedy_search_max: float = 0.1
    calibration_trials: int = 5


def _stage(start: Path, data: Path, out_dir: Path, steps: int, lr: float, seed: int) -> Path:
    """One SFT stage, reused when its folder is complete (``steps == 0``: the stage is skipped)."""
    if steps <= 0:
        return start
    if not (out_dir / "config.json").exists():
        run_sft(start, data, out_dir, steps, lr, seed=seed)
    return out_dir


@dataclass
class WarmStart:
    """One seed's prepared task and its two SFT stages: ``reader`` (stage 1) and ``start`` (stage 2, where RL
    begins); ``seconds`` is each stage's wall time (``read`` includes preparing the task and data);
    ``trials``: the calibration's guess fractions tried, with the search rates they gave (the last is used)."""

    prep: Prepared
    reader: Path
    start: Path
    seconds: dict[str, float]
    trials: list[dict]


def search_rates(model_dir: Path, prep: Prepared, seed: int = 0) -> dict[str, float]:
    """Share of the training questions on which the policy in ``model_dir`` searches at least once: greedy, and
    with one T = 1 sample per question (the RL configs' sampling), over BM25 on the real task's corpus."""
    from searchr1.models import load_causal_lm, load_tokenizer
    from searchr1.retrieval import BM25Retriever
    from searchr1.rollout.backends.hf import HFBackend

    tok = load_tokenizer(str(model_dir))
    backend = HFBackend(load_causal_lm(str(model_dir)).eval(), tok)
    retriever = BM25Retriever(corpus=str(prep.files.corpus), stemmer="none")
    train = prep.task.questions("train")
    prompts = [get_protocol(prep.protocol).build_prompt(ex.question, tok) for ex in train]
    rates = {}
    for name, sample in (("greedy", False), ("sampled", True)):
        config = RolloutConfig(**{**ROLLOUTS[prep.protocol].__dict__, "do_sample": sample, "temperature": 1.0})
        with torch.no_grad():
            batch = RolloutEngine(backend, retriever, tok, config).generate(prompts, seed=seed)
        rates[name] = sum(t.num_searches > 0 for t in batch.trajectories) / len(prompts)
    return rates


def next_guess_fraction(g: float, too_searchy: bool, low: float, high: float, step: float = 0.15) -> float:
    """Bisection step on the guess fraction: up when the warm start searches too much, down when too little.

    ``low``/``high``: the largest fraction known to search too much and the smallest known to search too little
    (0 / 1 when none is known yet); without a bound on that side the fraction moves by ``step``.
    """
    if too_searchy:
        return (g + high) / 2 if high < 1.0 else min(g + step, 0.95)
    return (g + low) / 2 if low > 0.0 else max(g - step, 0.05)


def calibrate_warm_start(prep: Prepared, reader: Path, plan: Plan) -> tuple[Path, list[dict]]:
    """Stage 2 at guess fractions chosen by bisection until the warm start's search rates fit ``plan``.

    The same fraction does not fit every seed (docs/learning.md: 0.6 left seed 3's greedy start searching
    everywhere, 0.75 left seed 0 with too few sampled searches for RL to find them), so it is measured:
    each trial is one short SFT from the stage-1 reader (``sft<fraction_suffix>``) and :func:`search_rates`.
    Too many greedy or sampled searches → guess more; too few sampled → guess less. After
    ``plan.calibration_trials`` without a fit, the trial closest to the window is used.
    """
    lo_rate, hi_rate = plan.search_rate
    g, low, high, trials = plan.guess_fraction, 0.0, 1.0, []
    for _ in range(plan.calibration_trials):
        folder = prep.out / f"sft{fraction_suffix(g)}"
        start = _stage(reader, guess_data(prep, g), folder, plan.sft_steps, plan.sft_lr, prep.seed)
        if not plan.calibrate:
            return start, [{"guess_fraction": g, "dir": str(start)}]
        rates = search_rates(start, prep, prep.seed)
        too_searchy = rates["greedy"] > plan.greedy_search_max or rates["sampled"] > hi_rate
        miss = max(rates["greedy"] - plan.greedy_search_max, rates["sampled"] - hi_rate, lo_rate - rates["sampled"], 0)
        trials.append({"guess_fraction": g, "dir": str(start), **rates, "miss": miss})
        print(f"[calibrate] seed {prep.seed}: guess fraction {g:.3f} -> search rate {rates}", flush=True)
        if miss == 0:
            break
        low, high = (g, high) if too_searchy else (low, g)
        g = next_guess_fraction(g, too_searchy, low, high)
    best = min(trials, key=lambda t: t["miss"])
    trials.remove(best)
    return Path(best["dir"]), [*trials, best]


def warm_start(out: Path, seed: int, plan: Plan) -> WarmStart:
    """Prepare ``seed``'s task and data, then run (or reuse) stage 1 and the calibrated stage 2."""
    t0 = time.perf_counter()
    prep = prepare(out, seed, plan.sft_worlds, protocol=plan.protocol)
    reader = _stage(prep.init_dir, prep.read_data, out / "read", plan.read_steps, plan.read_lr, seed)
    t1 = time.perf_counter()
    start, trials = calibrate_warm_start(prep, reader, plan)
    return WarmStart(prep, reader, start, {"read": t1 - t0, "sft": time.perf_counter() - t1}, trials)


def prepare_sft(out: Path, seed: int, plan: Plan) -> tuple[Path, Path]:
    """The inputs of ``configs/sft_synthetic.yaml`` (stage 2 run on its own): stage 1's model and the imperfect
    teacher's data at ``plan.guess_fraction``; returns ``(model folder, data file)``."""
    prep = prepare(out, seed, plan.sft_worlds, protocol=plan.protocol)
    reader = _stage(prep.init_dir, prep.read_data, out / "read", plan.read_steps, plan.read_lr, seed)
    data = guess_data(prep, plan.guess_fraction)
    print(f"stage 1 model: {reader}\nstage 2 data:  {data}\nnext: searchr1 sft fit -c configs/sft_synthetic.yaml")
    return reader, data


def run_seed(out: Path, seed: int, plan: Plan) -> list[dict]:
    """The whole pipeline for one seed: the best-constant baseline, then one result row per evaluated model
    (``seconds``: the stage's or RL run's wall time, its evaluation excluded for the SFT stages)."""
    warm = warm_start(out, seed, plan)
    prep, sft_dir, proto = warm.prep, warm.start, plan.protocol
    earlier = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else []
    kept = [r for r in earlier if r["run"] in VARIANTS and r["run"] not in plan.variants]  # a rerun keeps the others
    rows = [{"seed": seed, "run": "best_constant", "search": False, "em": constant_baseline(prep.task)}]
    rows.append({"seed": seed, "run": "read", "search": True, **evaluate(warm.reader, prep, True, protocol=proto)})
    rows[-1]["seconds"] = warm.seconds["read"]
    rows.append({"seed": seed, "run": "sft", "search": True, **evaluate(sft_dir, prep, True, protocol=proto)})
    rows.append({"seed": seed, "run": "sft", "search": False, **evaluate(sft_dir, prep, False, protocol=proto)})
    rows[-1]["seconds"] = warm.seconds["sft"]
    rows[-1]["calibration"] = warm.trials
    rows += kept
    _dump(out, rows)
    for variant in plan.variants:
        algo, _, ablation = variant.partition("_")
        search, mask = ablation != "nosearch", ablation != "nomask"
        t0 = time.perf_counter()
        policy = run_rl(prep, sft_dir, algo, out / variant, plan.rl_steps, seed, search, mask, proto)
        rows.append({"seed": seed, "run": variant, "search": search, **evaluate(policy, prep, search, protocol=proto)})
        rows[-1]["seconds"] = time.perf_counter() - t0
        _dump(out, rows)
    return rows


def quick_check(
    out: Path, seed: int, rl_steps: int = 20, limit: int = 60, read_steps: int = Plan.read_steps
) -> dict[str, dict[str, float]]:
    """The reduced experiment of the ``slow`` test: both SFT stages (stage 2 calibrated), then GRPO with BM25 and
    GRPO with the empty retriever for ``rl_steps`` each; greedy EM on the first ``limit`` held-out questions of
    every model (``calibration``: the trials of :func:`calibrate_warm_start`)."""
    warm = warm_start(out, seed, Plan(variants=[], read_steps=read_steps))
    prep, sft = warm.prep, warm.start
    found = {
        "untrained": evaluate(prep.init_dir, prep, True, limit),
        "best_constant": {"em": constant_baseline(prep.task, limit)},
        "sft": evaluate(sft, prep, True, limit),
        "calibration": {"trials": warm.trials, **warm.seconds},
    }
    for name, search in (("grpo", True), ("grpo_nosearch", False)):
        t0 = time.perf_counter()
        policy = run_rl(prep, sft, "grpo", out / name, rl_steps, seed, search, mask=True)
        found[name] = {**evaluate(policy, prep, search, limit), "seconds": time.perf_counter() - t0}
    return found


def _dump(out: Path, rows: list[dict]) -> None:
    (out / "results.json").write_text(json.dumps(rows, indent=1))


def summary_markdown(rows: list[dict]) -> str:
    """One table row per (seed, run): held-out EM (all / 1-hop / 2-hop), searches and response tokens."""
    lines = [
        "| seed | run | retriever | held-out EM | 1-hop EM | 2-hop EM | searches/q | response tokens |",
        "|---|---|---|---|---|---|---|---|",
    ]
    nan = float("nan")
    for r in rows:
        lines.append(
            f"| {r['seed']} | {r['run']} | {'BM25' if r['search'] else 'empty'} | {r['em']:.3f} | "
            f"{r.get('em_1hop', nan):.3f} | {r.get('em_2hop', nan):.3f} | {r.get('searches', nan):.2f} | "
            f"{r.get('response_tokens', nan):.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/learn_synthetic", help="output folder (one sub-folder per seed)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", nargs="+", default=["grpo", "ppo", "grpo_nosearch", "grpo_nomask"])
    parser.add_argument("--read-steps", type=int, default=Plan.read_steps, help="stage 1: gold SFT (reading)")
    parser.add_argument("--read-lr", type=float, default=Plan.read_lr)
    parser.add_argument("--sft-steps", type=int, default=Plan.sft_steps, help="stage 2: imperfect-teacher SFT")
    parser.add_argument("--sft-lr", type=float, default=Plan.sft_lr)
    parser.add_argument("--rl-steps", type=int, default=Plan.rl_steps, help="RL rollout steps")
    parser.add_argument(
        "--guess-fraction",
        type=float,
        default=Plan.guess_fraction,
        help="stage 2: share of demos that guess (first try)",
    )
    parser.add_argument(
        "--no-calibrate", action="store_true", help="stage 2 at --guess-fraction as given, no search-rate calibration"
    )
    parser.add_argument("--sft-worlds", type=int, default=Plan.sft_worlds, help="SFT data over this many worlds")
    parser.add_argument("--protocol", default="search_r1", choices=list(ROLLOUTS), help="text protocol of the run")
    parser.add_argument("--plots", default=None, help="write the first seed's RL curves (PNG) under this folder")
    parser.add_argument(
        "--prepare-sft",
        action="store_true",
        help="only write what `searchr1 sft fit -c configs/sft_synthetic.yaml` reads: stage 1's model (read/) and "
        "stage 2's data (sft_data.jsonl) of each seed, then stop",
    )
    args = parser.parse_args(argv)
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad:
        parser.error(f"unknown variants {bad}; valid: {', '.join(VARIANTS)}")
    out = Path(args.out)
    plan = Plan(
        args.variants,
        args.read_steps,
        args.read_lr,
        args.sft_steps,
        args.sft_lr,
        args.rl_steps,
        args.guess_fraction,
        args.sft_worlds,
        args.protocol,
        calibrate=not args.no_calibrate,
    )
    if args.prepare_sft:
        for seed in args.seeds:
            prepare_sft(out / f"seed{seed}", seed, plan)
        return
    rows: list[dict] = []
    for seed in args.seeds:
        rows += run_seed(out / f"seed{seed}", seed, plan)
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
