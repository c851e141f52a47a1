"""The stages of the learning experiment (``tools/learn_synthetic.py``): the task and its data, the SFT and RL
runs through the CLIs, the best-constant baseline and held-out evaluation. ``learn_synthetic.py`` holds the plan,
the warm start's calibration and the driver."""

from __future__ import annotations

import functools
import sys
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
DEFAULT_GUESS_FRACTION = 0.6
"""Stage 2's first guess fraction (``Plan.guess_fraction``); its files carry no suffix."""
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
    return "" if guess_fraction == DEFAULT_GUESS_FRACTION else f"_g{guess_fraction:.3f}"


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
