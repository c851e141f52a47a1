"""Console scripts ``searchr1-eval`` (the 7-dataset table) and ``searchr1-infer`` (ask one question).

Examples::

    # Search-R1 and both baselines on the 7 sets prepared by tools/prepare_data.py, BM25 index, greedy
    searchr1-eval --model runs/x/checkpoints/last.ckpt --data-dir data/search_r1 --datasets all \\
        --index-dir indexes/wiki18-bm25 --method search_r1 direct rag --out runs/x/eval
    # any files, a retrieval server, 200 questions per set, sampling
    searchr1-eval --model Qwen/Qwen2.5-3B-Instruct --datasets nq=data/nq.jsonl bamboogle=data/bamboogle.jsonl \\
        --retriever-url http://127.0.0.1:8000 --max-samples 200 --do-sample --temperature 0.7 --seed 1
    searchr1-infer "Who directed Ed Wood?" --model runs/x/checkpoints/last.ckpt --corpus corpus.jsonl

A model trained here (a ``.ckpt`` or an exported ``hf/...`` folder) carries its run's rollout settings (turns, token
limits, ``topk``, protocol, chat template) and BM25 build settings (stemmer, stopwords): they are the defaults,
printed at the start; flags override them. Decoding is greedy unless ``--do-sample``.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from searchr1.errors import ShortArgumentParser, UserError
from searchr1.evaluation.prompts import METHODS

ROLLOUT_FLAGS = ("max_turns", "max_response_tokens", "max_obs_tokens", "max_total_tokens", "max_prompt_tokens", "topk")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", required=True, help="HF model name/folder, tiny:<preset>, or a SearchR1Module .ckpt")
    g.add_argument("--tokenizer", default=None, help="tokenizer path (default: the checkpoint's / the model's)")
    g.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"], help="parameter dtype")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1, … (default: cuda when available)")
    g.add_argument("--backend", default="hf", choices=["hf", "vllm"], help="generation backend")
    g.add_argument("--batch-size", type=int, default=64, help="questions per rollout call")
    g.add_argument("--no-chat-template", action="store_true", help="raw prompts (base models)")
    g.add_argument(
        "--chat-template",
        default=None,
        help="Jinja chat-template file replacing the tokenizer's (pkg:assets/chat_templates/chatml_tools.jinja: "
        "tool calling for ChatML models such as SmolLM2)",
    )
    g = p.add_argument_group("retriever (one of)")
    g.add_argument("--corpus", default=None, help="corpus .jsonl for in-memory BM25 (small corpora)")
    g.add_argument("--index-dir", default=None, help="index folder from searchr1-index build (BM25 or dense)")
    g.add_argument("--retriever-url", default=None, help="retrieval server, e.g. http://127.0.0.1:8000")
    g.add_argument(
        "--replay",
        default=None,
        metavar="LOG",
        help="answer searches from an earlier run's search_log.parquet (offline; unseen queries are an error)",
    )
    g.add_argument(
        "--stemmer",
        default=None,
        help="BM25 stemmer when indexing --corpus here (none, porter, ...); default: the run's, else porter",
    )


def _add_rollout_args(p: argparse.ArgumentParser) -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(_rollout_cls())}
    g = p.add_argument_group("rollout and sampling (greedy unless --do-sample)")
    for name in ROLLOUT_FLAGS:
        g.add_argument(
            "--" + name.replace("_", "-"), type=int, default=None, help=f"(default: the run's, else {defaults[name]})"
        )
    g.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--seed", type=int, default=None, help="sampling seed")
    g.add_argument(
        "--protocol",
        default=None,
        choices=_protocol_names(),
        help="text protocol: search_r1 (tags) or tool_call (chat-template tool calls); default: the checkpoint's, "
        "else search_r1",
    )


def _protocol_names() -> list[str]:
    from searchr1.protocols import PROTOCOLS

    return PROTOCOLS.names()


def _rollout_cls():
    from searchr1.rollout import RolloutConfig

    return RolloutConfig


def _rollout_config(args: argparse.Namespace, policy):
    """Flags given, else the run's settings (``policy.run``), else the ``RolloutConfig`` defaults."""
    run = getattr(policy, "run", None)
    kwargs = {"protocol": policy.protocol, **(run.rollout_fields() if run is not None else {})}
    given = [f.name for f in dataclasses.fields(_rollout_cls()) if getattr(args, f.name, None) is not None]
    kwargs.update({n: getattr(args, n) for n in given})
    return _rollout_cls()(**kwargs)


def _bm25_settings(args: argparse.Namespace, policy) -> dict:
    """BM25 build settings for ``--corpus``: the run's (when it searched BM25), ``--stemmer`` overriding."""
    from searchr1.rollout.run_settings import BM25_BUILD_SETTINGS

    spec = (policy.run.retriever if getattr(policy, "run", None) is not None else None) or {}
    settings = {k: spec[k] for k in BM25_BUILD_SETTINGS if k in spec} if spec.get("kind") == "bm25" else {}
    if args.stemmer is not None:
        settings["stemmer"] = args.stemmer
    return settings


def _report_run_settings(args: argparse.Namespace, policy, config, bm25: dict) -> None:
    """Print which settings came from the run (those no flag overrode)."""
    run = getattr(policy, "run", None)
    if run is None:
        return
    defaults = _rollout_cls()()
    shown = [
        k for k in run.rollout_fields() if k in (*ROLLOUT_FLAGS, "protocol") or run.rollout[k] != getattr(defaults, k)
    ]
    used = [f"{k}={getattr(config, k)}" for k in shown if getattr(args, k, None) is None]
    if not args.no_chat_template:
        used.append(f"chat_template={'on' if policy.use_chat_template else 'off'}")
    if args.corpus and not args.index_dir:
        used += [f"bm25 {k}={v}" for k, v in bm25.items() if not (k == "stemmer" and args.stemmer is not None)]
    print(f"searchr1: settings from the run ({run.source}): {', '.join(used)}; flags override them", flush=True)


def _load(args: argparse.Namespace):
    from searchr1.evaluation.loading import build_backend_for, build_retriever, load_policy

    policy = load_policy(args.model, args.tokenizer, args.dtype, args.device, chat_template=args.chat_template)
    out = getattr(args, "out", None)
    export = str(Path(out) / "exported_policy") if out else _temp_export_dir(args.backend, args.model)
    backend = build_backend_for(policy, args.backend, args.batch_size, export_dir=export)
    bm25 = _bm25_settings(args, policy)
    if args.replay:
        from searchr1.retrieval.search_log import ReplayRetriever

        if args.corpus or args.index_dir or args.retriever_url:
            raise ValueError("--replay answers every search from the log: drop --corpus, --index-dir, --retriever-url")
        retriever = ReplayRetriever(args.replay)
    else:
        retriever = build_retriever(args.corpus, args.index_dir, args.retriever_url, args.device, bm25=bm25)
    use_chat = policy.use_chat_template and not args.no_chat_template
    _report_run_settings(args, policy, _rollout_config(args, policy), bm25)
    return policy, backend, retriever, use_chat


def _temp_export_dir(backend: str, model: str) -> str | None:
    """A temp folder for the checkpoint export a folder-loading backend (vLLM) needs, removed at exit; None when
    nothing will be exported (the folder used to be made, and left empty, on every ``infer``)."""
    if backend == "hf" or not model.endswith(".ckpt"):
        return None
    import atexit
    import shutil

    folder = tempfile.mkdtemp(prefix="searchr1-policy-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def default_out_dir(model: str) -> Path:
    """``<run>/eval`` next to a checkpoint's ``checkpoints/`` folder, else ``runs/eval/<model name>``."""
    path = Path(model)
    if model.endswith(".ckpt"):
        parent = path.parent
        return (parent.parent if parent.name == "checkpoints" else parent) / "eval" / path.stem
    return Path("runs") / "eval" / re.sub(r"[^A-Za-z0-9_.-]+", "_", model.strip("/"))


def eval_parser() -> argparse.ArgumentParser:
    """Arguments of ``searchr1-eval``."""
    p = ShortArgumentParser(
        prog="searchr1-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _add_model_args(p)
    g = p.add_argument_group("data and output")
    g.add_argument("--datasets", nargs="+", default=["all"], help="name=path pairs, standard names, or 'all'")
    g.add_argument("--data-dir", default=None, help="folder written by tools/prepare_data.py (for standard names)")
    g.add_argument("--max-samples", type=int, default=None, help="first N questions of each set")
    g.add_argument("--method", nargs="+", default=["search_r1"], choices=METHODS.names(), help="rows to evaluate")
    g.add_argument("--num-samples", type=int, default=1, help="trajectories per question")
    g.add_argument("--out", default=None, help="output folder (default: <run>/eval/<ckpt> or runs/eval/<model>)")
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_rollout_args(p)
    return p


def run_eval(argv: Sequence[str] | None = None) -> list:
    """``searchr1-eval`` as a function: evaluate each ``--method``, write ``<out>/<method>/scores.{md,csv,json}``,
    ``<out>/<method>/trajectories.jsonl``, ``<out>/<method>/search_log.parquet`` (methods that retrieve; replay it with
    ``--replay``) and ``<out>/comparison.md``; returns the ``EvalReport`` of each method."""
    from searchr1.evaluation.datasets import load_datasets, resolve_datasets
    from searchr1.evaluation.evaluator import Evaluator
    from searchr1.evaluation.results import comparison_markdown, write_report
    from searchr1.retrieval.search_log import SEARCH_LOG_FILE

    args = eval_parser().parse_args(argv)
    args.out = args.out or str(default_out_dir(args.model))
    needs = [m for m in args.method if METHODS.get(m).searches or METHODS.get(m).uses_context]
    if needs and not (args.corpus or args.index_dir or args.retriever_url or args.replay):
        raise ValueError(
            f"method(s) {', '.join(needs)} needs a retriever: pass --corpus FILE, --index-dir DIR or "
            "--retriever-url URL"
        )
    datasets = load_datasets(resolve_datasets(args.datasets, args.data_dir), args.max_samples)
    policy, backend, retriever, use_chat = _load(args)
    config = _rollout_config(args, policy)
    reports = []
    for method in args.method:
        evaluator = Evaluator(
            backend,
            policy.tokenizer,
            retriever,
            method=method,
            rollout=config,
            batch_size=args.batch_size,
            num_samples=args.num_samples,
            seed=args.seed,
            use_chat_template=use_chat,
            model_name=args.model,
            show_progress=not args.no_progress,
            search_log=Path(args.out) / method / SEARCH_LOG_FILE,
        )
        report, results = evaluator.run(datasets)
        paths = write_report(report, results, Path(args.out) / method)
        print(report.to_markdown())
        print(f"wrote {', '.join(str(p) for p in paths.values())}  ({report.seconds:.1f} s)\n")
        reports.append(report)
    table = f"EM, {args.model}\n\n" + comparison_markdown(reports)
    (Path(args.out) / "comparison.md").write_text(table, encoding="utf-8")
    print(table)
    return reports


def infer_parser() -> argparse.ArgumentParser:
    """Arguments of ``searchr1-infer``."""
    p = ShortArgumentParser(prog="searchr1-infer", description="Ask a question; watch the policy reason and search.")
    p.add_argument("question", help="the question")
    p.add_argument("--method", default="search_r1", choices=METHODS.names())
    p.add_argument("--no-color", action="store_true", help="plain text output")
    _add_model_args(p)
    _add_rollout_args(p)
    return p


def run_infer(argv: Sequence[str] | None = None):
    """``searchr1-infer`` as a function: prints each turn, query, retrieved titles and the answer; returns the
    ``InferenceResult``."""
    from searchr1.evaluation.inference import Printer, infer

    args = infer_parser().parse_args(argv)
    args.out = None
    policy, backend, retriever, use_chat = _load(args)
    if retriever is None and METHODS.get(args.method).searches:
        raise UserError("infer: give a search engine with --corpus, --index-dir or --retriever-url")
    return infer(
        args.question,
        backend,
        policy.tokenizer,
        retriever,
        config=_rollout_config(args, policy),
        method=args.method,
        use_chat_template=use_chat,
        printer=Printer(color=False if args.no_color else None),
        seed=args.seed,
    )


def eval_main(argv: Sequence[str] | None = None) -> None:
    """Console script ``searchr1-eval`` (see :func:`run_eval`)."""
    run_eval(argv)


def infer_main(argv: Sequence[str] | None = None) -> None:
    """Console script ``searchr1-infer`` (see :func:`run_infer`)."""
    run_infer(argv)
