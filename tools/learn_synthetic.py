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
import functools
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

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
from searchr1.protocols import get_protocol
from searchr1.rollout import RolloutConfig, RolloutEngine

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"grpo": ROOT / "configs" / "learn_synthetic_grpo.yaml", "ppo": ROOT / "configs" / "learn_synthetic_ppo.yaml"}
VARIANTS = ("grpo", "ppo", "grpo_nosearch", "grpo_nomask", "ppo_nosearch", "ppo_nomask")
ROLLOUT = RolloutConfig(
    max_turns=2, max_response_tokens=32, max_obs_tokens=64, max_total_tokens=448, max_prompt_tokens=192, topk=1
)
"""Rollout settings shared by SFT data building and evaluation (the RL configs hold the same values)."""
ROLLOUTS = {
    "search_r1": ROLLOUT,
    # the tool prompt (schema in a system block), the JSON calls and the tool messages take more tokens
    "tool_call": RolloutConfig(
        **{
            **ROLLOUT.__dict__,
            "protocol": "tool_call",
            "max_response_tokens": 48,
            "max_obs_tokens": 80,
            "max_total_tokens": 640,
            "max_prompt_tokens": 320,
        }
    ),
}
"""The settings of each protocol; RL overrides the config's rollout with them (``rollout_args``)."""


def rollout_args(protocol: str) -> list[str]:
    """``searchr1 fit`` flags that set the RL rollout to ``ROLLOUTS[protocol]`` (none for the tag protocol)."""
    return [f"--model.rollout.{k}={v}" for k, v in ROLLOUTS[protocol].__dict__.items() if v != ROLLOUT.__dict__[k]]


@dataclass
class Prepared:
    """One seed's task files, initial model, tokenizer and the gold teacher's SFT data.

    ``read_data``: the gold teacher's trajectories (always searches and reads; stage 1, where the tiny model
    learns to read passages). The imperfect teacher's data (stage 2, the warm start RL begins from) is written
    per guess fraction by :func:`guess_data`. ``worlds``: the ``sft_worlds`` worlds (the real task first) with
    their corpus files.
    """

    task: SyntheticTask
    files: TaskFiles
    init_dir: Path
    read_data: Path
    out: Path
    seed: int
    worlds: list[tuple[SyntheticTask, Path]]
    protocol: str = "search_r1"


def prepare(
    out: Path,
    seed: int,
    sft_worlds: int = 1,
    preset: str = "small",
    vocab_size: int = 1024,
    protocol: str = "search_r1",
) -> Prepared:
    """Task files, a tiny model (tokenizer trained on the task) and the gold teacher's SFT trajectories.

    The data holds the training questions of ``sft_worlds`` worlds: the real one plus ``sft_worlds - 1`` whose
    facts were drawn again (``redraw_facts``; each with its own corpus), so they cannot be fitted by memorising
    who was born where. The gold teacher follows the gold search path everywhere. Turns, prompts and the
    tokenizer's texts are those of ``protocol``.
    """
    from searchr1.models import TINY_PRESETS
    from searchr1.models.tiny import build_tiny_qwen2

    task = generate_task(seed)
    files = write_task(task, out / "task")
    init_dir = build_tiny_qwen2(
        out / "init",
        texts=synthetic_texts(task, protocol=protocol),
        vocab_size=vocab_size,
        seed=seed,
        **_preset(TINY_PRESETS[preset]),
    )
    worlds = [(task, files.corpus)]
    for k in range(1, sft_worlds):
        world = redraw_facts(task, 1000 * seed + k)
        worlds.append((world, write_task(world, out / f"sft_world{k}").corpus))
    prep = Prepared(task, files, init_dir, out / "read_data.jsonl", out, seed, worlds, protocol)
    if not prep.read_data.is_file():  # written once, like the stages that read it
        _teacher_data(prep, 0.0, prep.read_data)
    return prep


def fraction_suffix(guess_fraction: float) -> str:
    """The file-name suffix of a guess fraction's stage-2 data and model: none for the default 0.6, else
    ``_g<fraction>``, so a stage trained at one fraction is never reused for another."""
    return "" if guess_fraction == Plan.guess_fraction else f"_g{guess_fraction:.3f}"


def guess_data(prep: Prepared, guess_fraction: float) -> Path:
    """The imperfect teacher's trajectories over ``prep.worlds``: a seeded ``guess_fraction`` of the questions
    answered at once with a random option of the right type (``searchr1.data.synthetic.teacher_turns``), the
    others on the gold path. Written once per fraction (``sft_data<fraction_suffix>.jsonl``)."""
    path = prep.out / f"sft_data{fraction_suffix(guess_fraction)}.jsonl"
    return path if path.is_file() else _teacher_data(prep, guess_fraction, path)


def _teacher_data(prep: Prepared, guess_fraction: float, path: Path) -> Path:
    """Roll the teacher that guesses on ``guess_fraction`` of the questions out with BM25 over every world."""
    from searchr1.models import load_tokenizer
    from searchr1.retrieval import BM25Retriever
    from searchr1.rollout.backends.teacher import TeacherBackend
    from searchr1.rollout.types import save_trajectories
    from searchr1.training.sft import build_sft_trajectories

    tok = load_tokenizer(str(prep.init_dir))
    trajectories: list = []
    for k, (world, corpus) in enumerate(prep.worlds):
        train = world.questions("train")
        prompts = [get_protocol(prep.protocol).build_prompt(ex.question, tok) for ex in train]
        retriever = BM25Retriever(corpus=str(corpus), stemmer="none")  # made-up names
        turns = teacher_turns(world, train, guess_fraction, 1000 * prep.seed + k, prep.protocol)
        engine = RolloutEngine(TeacherBackend(turns, tok), retriever, tok, ROLLOUTS[prep.protocol])
        keep = functools.partial(_kept, protocol=prep.protocol)
        trajectories += build_sft_trajectories(engine, train, prompts, keep=keep)
    tmp = path.with_suffix(".tmp")
    save_trajectories(trajectories, tmp)
    return tmp.replace(path)


def _kept(example, traj, protocol: str = "search_r1") -> bool:
    """SFT filter: a guess that answered, or a search path whose observations hold the answer."""
    from searchr1.training.sft import answer_was_retrieved

    return traj.finish_reason == "answer" and (traj.num_searches == 0 or answer_was_retrieved(example, traj, protocol))


def _preset(p: dict[str, int]) -> dict[str, int]:
    return {k: p[k] for k in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size")}


def run_sft(
    start: Path,
    data: Path,
    out_dir: Path,
    steps: int,
    lr: float,
    batch_size: int = 16,
    seed: int = 0,
    warmup_steps: int = 10,
    precision: str = "32-true",
) -> Path:
    """SFT of the policy in ``start`` on the trajectories in ``data``; the policy is saved to ``out_dir``.
    ``precision``: Lightning's (``bf16-mixed``: float32 weights, bfloat16 autocast)."""
    from lightning.pytorch import Trainer, seed_everything

    from searchr1.training.sft import SFTDataModule, SFTModule

    seed_everything(seed, verbose=False)
    module = SFTModule(str(start), lr=lr, warmup_steps=warmup_steps, output_dir=str(out_dir))
    data_module = SFTDataModule(str(data), batch_size=batch_size, seed=seed)
    trainer = Trainer(
        accelerator="cpu",
        precision=precision,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, data_module)
    return out_dir


def run_rl(
    prep: Prepared,
    start: Path,
    algo: str,
    out_dir: Path,
    steps: int,
    seed: int,
    search: bool,
    mask: bool,
    protocol: str = "search_r1",
    config: Path | None = None,
    extra: tuple[str, ...] = (),
) -> Path:
    """RL (``configs/learn_synthetic_<algo>.yaml``, or ``config``) from ``start``, with ``extra`` CLI flags; returns
    the exported policy folder (merged weights for a LoRA policy)."""
    from searchr1.cli import SearchR1CLI
    from searchr1.data.datamodule import QADataModule
    from searchr1.training.ablations import UnmaskedSearchR1Module
    from searchr1.training.module import SearchR1Module

    args = [
        "fit",
        "--config",
        str(config or CONFIGS[algo]),
        f"--seed_everything={seed}",
        f"--model.model_name_or_path={start}",
        f"--model.seed={seed}",
        f"--data.train_files=[{prep.files.train}]",
        f"--data.val_files=[{prep.files.heldout}]",
        f"--data.seed={seed}",
        f"--trainer.limit_train_batches={steps}",  # rollout steps
        f"--trainer.default_root_dir={out_dir}",
        f"--trainer.logger.init_args.save_dir={out_dir}",
        *rollout_args(protocol),
        *extra,
    ]
    if search:
        args.append(f"--model.retriever.init_args.corpus={prep.files.corpus}")
    else:
        args.append('--model.retriever={"class_path": "searchr1.retrieval.null.EmptyRetriever"}')
    sys.argv = sys.argv[:1]
    cls = SearchR1Module if mask else UnmaskedSearchR1Module
    cli = SearchR1CLI(cls, QADataModule, args=args, save_config_kwargs={"overwrite": True})
    from searchr1.models import save_hf_folder

    return save_hf_folder(cli.model.policy, cli.model.tokenizer, out_dir / "policy")


def constant_baseline(task: SyntheticTask, limit: int | None = None) -> float:
    """Held-out EM of the best policy that never reads: the most frequent held-out answer of each question type.

    The ceiling of the no-search ablation (a policy whose searches return nothing can at best learn these).
    """
    examples = task.questions("heldout")[:limit]
    by_kind: dict[str, list[str]] = {}
    for ex in examples:
        by_kind.setdefault(ex.metadata["kind"], []).append(ex.golden_answers[0])
    return sum(max(answers.count(a) for a in answers) for answers in by_kind.values()) / len(examples)


def evaluate(
    model_dir: Path, prep: Prepared, search: bool, limit: int | None = None, protocol: str = "search_r1"
) -> dict[str, float]:
    """Greedy held-out EM, searches, response tokens, and two reading checks of the policy in ``model_dir``.

    ``query_is_entity``: share of questions whose first search query is the asked person's name;
    ``distinct_answers``: how many different answers the policy gave over the questions (a policy that ignores
    the question gives one per question type).
    """
    from searchr1.evaluation import Evaluator
    from searchr1.models import load_causal_lm, load_tokenizer
    from searchr1.retrieval import BM25Retriever
    from searchr1.retrieval.null import EmptyRetriever
    from searchr1.rollout.backends.hf import HFBackend

    tok = load_tokenizer(str(model_dir))
    model = load_causal_lm(str(model_dir)).eval()
    retriever = BM25Retriever(corpus=str(prep.files.corpus), stemmer="none") if search else EmptyRetriever()
    config = RolloutConfig(**{**ROLLOUTS[protocol].__dict__, "do_sample": False})
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
    guess_fraction: float = 0.6
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
