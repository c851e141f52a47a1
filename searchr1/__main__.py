"""The ``searchr1`` console command: the one front door to training (LightningCLI) and every tool.

``searchr1 fit|validate|test`` go to the LightningCLI (``searchr1.cli``); ``searchr1 sft|index|serve|eval|infer``
to the tools, whose ``searchr1-*`` console scripts stay as aliases. ``searchr1 --help`` lists them all.
A user error (bad option, file or data line) ends in a few lines starting ``searchr1: error:`` (``searchr1.errors``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

TRAIN_COMMANDS = {
    "fit": "train; with no --config the embedded default (configs/learn_cpu.yaml: learns to search in minutes)",
    "validate": "evaluate a model on the config's validation sets",
    "test": "evaluate a model on the config's test sets",
}
TOOL_COMMANDS = {
    "sft": "supervised warm start on trajectories (LightningCLI: searchr1 sft fit -c configs/sft_synthetic.yaml)",
    "index": "build a retrieval index over a corpus (searchr1 index build --corpus C --out DIR --retriever bm25)",
    "serve": "serve an index over HTTP, Search-R1's /retrieve (searchr1 serve --index DIR --port 8000)",
    "eval": "evaluate a policy on QA benchmarks: EM/F1, searches, per method (searchr1 eval --model M ...)",
    "infer": 'ask one question, watch the policy reason and search (searchr1 infer --model M "question")',
    "report": "one HTML page of a training run: curves, trajectories, search quality (searchr1 report RUN_DIR)",
}


def _tool(name: str) -> Callable[[list[str]], object]:
    if name == "sft":
        return _sft
    if name in ("index", "serve"):
        from searchr1.retrieval import cli as retrieval_cli

        if name == "index":
            return retrieval_cli.index_main
        return lambda args: retrieval_cli.serve_main(["serve", *args])
    if name == "report":
        from searchr1.evaluation.html_report import report_main

        return report_main
    from searchr1.evaluation import cli as evaluation_cli

    return evaluation_cli.eval_main if name == "eval" else evaluation_cli.infer_main


def _sft(args: list[str]) -> object:
    import warnings

    from searchr1.training.sft import main as sft_main

    with warnings.catch_warnings():  # sys.argv deliberately keeps "sft" (see main): not the mistake warned about
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended", module=r"lightning\.")
        return sft_main(args)


def usage() -> str:
    """The top-level help: every command with one line each."""
    width = max(map(len, [*TRAIN_COMMANDS, *TOOL_COMMANDS])) + 2
    lines = ["usage: searchr1 <command> [options]     (searchr1 <command> --help: its options)", ""]
    lines += ["training (LightningCLI: --config FILE, --trainer.*, --model.*, --data.*):"]
    lines += [f"  {k:<{width}}{v}" for k, v in TRAIN_COMMANDS.items()]
    lines += ["", "tools:"]
    lines += [f"  {k:<{width}}{v}" for k, v in TOOL_COMMANDS.items()]
    lines += ["", "  --version  print the version", ""]
    lines += ["Start with `searchr1 fit` (no config): it ends with a summary and the next commands to run."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``searchr1`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in {"--version", "-V"}:
        from searchr1 import __version__

        print(f"searchr1 {__version__}")
        return
    if not args or args[0] in {"-h", "--help", "help"}:
        print(usage())
        return
    from searchr1.errors import run_command
    from searchr1.quiet import quiet_known_noise

    quiet_known_noise()
    if args[0] in TOOL_COMMANDS:
        # the tool parses ``args[1:]``; sys.argv stays the full command, so Lightning's launcher (several ranks)
        # re-runs ``searchr1 <tool> ...`` for the other ranks
        run_command(_tool(args[0]), args[1:])
        return
    if args[0] not in TRAIN_COMMANDS and not args[0].startswith("-"):
        valid = ", ".join([*TRAIN_COMMANDS, *TOOL_COMMANDS])
        sys.exit(f"searchr1: error: unknown command {args[0]!r}; valid: {valid} (searchr1 --help)")
    from searchr1.cli import cli_main

    run_command(cli_main, args)


if __name__ == "__main__":
    main()
