"""Plot a training run's TensorBoard curves as PNGs saved in the run folder.

Reads the ``events.out.tfevents.*`` of one run under RUN_DIR (e.g. ``runs/tiny_cpu``) and writes ``reward_em.png``
(train/reward, train/em, val/em, val/<source>/em), ``searches.png`` (rollout/searches_mean),
``response_length.png`` (train/response_length) and ``kl.png`` (train/policy/kl) for the tags that were logged.
Needs matplotlib (``pip install 'searchr1[dev]'``). When RUN_DIR holds several runs' logs (a root whose
``tensorboard/version_0``, ``version_1``, ... are separate runs), the newest is plotted, and the others are named:
pass one of them to plot it. Curves of unrelated runs are never merged.

Example::

    python tools/plot_run.py runs/tiny_cpu
    python tools/plot_run.py runs/tiny_cpu --out runs/tiny_cpu/plots
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path


def log_folders(root: Path) -> list[Path]:
    """The folders holding event files under ``root`` (one per run), newest last."""
    from searchr1.evaluation.plots import find_event_files

    folders = {f.parent for f in find_event_files(root)}
    return sorted(folders, key=lambda d: max(f.stat().st_mtime for f in d.glob("events.out.tfevents.*")))


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """Command-line entry point (see the module docstring); returns the written PNG paths."""
    from searchr1.errors import run_command

    return run_command(_main, argv)


def _main(argv: Sequence[str] | None) -> list[Path]:
    from searchr1.errors import ShortArgumentParser
    from searchr1.evaluation.plots import plot_run

    parser = ShortArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="run folder holding TensorBoard event files (searched recursively)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the PNGs (default: RUN_DIR)")
    args = parser.parse_args(argv)
    folders = log_folders(args.run_dir)
    run_dir = folders[-1] if folders else args.run_dir
    if len(folders) > 1:
        others = ", ".join(str(f) for f in folders[:-1])
        print(f"{args.run_dir} holds {len(folders)} runs; plotting the newest, {run_dir} (others: {others})")
    written = plot_run(run_dir, args.out if args.out is not None else args.run_dir)
    if not written:
        print(f"none of the plotted metrics were logged under {args.run_dir}")
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    main()
