"""Plot a training run's TensorBoard curves as PNGs saved in the run folder.

Reads the ``events.out.tfevents.*`` of one run under RUN_DIR (e.g. ``runs/tiny_cpu``) and writes ``reward_em.png``
(train/reward, train/em, val/em, val/<source>/em), ``searches.png`` (rollout/searches_mean),
``response_length.png`` (train/response_length) and ``kl.png`` (train/policy/kl) for the tags that were logged.
Needs matplotlib (``pip install 'searchr1[dev]'``). Each log folder (``tensorboard/version_N``) is one
Lightning run; a resume logs into a new folder whose steps continue the previous one, and is merged with it. When
RUN_DIR holds unrelated runs (a later folder starting again at step 0), only the newest run is plotted and the others
are named: pass one of them to plot it. Curves of unrelated runs are never merged.

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


def newest_run(folders: list[Path]) -> list[Path]:
    """The log folders (oldest first) of the newest run: the newest folder, and the folders before it as long as
    each later one continues them (its first step is not 0: a resume)."""
    from searchr1.evaluation.plots import read_scalars

    chain: list[Path] = []
    for folder in reversed(folders):
        chain.insert(0, folder)
        first = min((step for points in read_scalars(folder).values() for step, _ in points), default=0)
        if first == 0:
            break
    return chain


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
    chain = newest_run(folders) if len(folders) > 1 else folders
    run_dir = chain[0] if len(chain) == 1 else args.run_dir  # a resumed run's folders: read_scalars merges them
    if len(chain) < len(folders):
        if len(chain) > 1:  # a resumed newest run after unrelated ones: its last folder only (it holds the latest)
            run_dir = chain[-1]
        others = ", ".join(str(f) for f in folders if f not in chain)
        print(f"{args.run_dir} holds several runs; plotting the newest, {run_dir} (others: {others})")
    written = plot_run(run_dir, args.out if args.out is not None else args.run_dir)
    if not written:
        print(f"none of the plotted metrics were logged under {args.run_dir}")
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    main()
