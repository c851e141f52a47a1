"""Plot a training run's TensorBoard curves as PNGs saved in the run folder.

Reads every ``events.out.tfevents.*`` under RUN_DIR (e.g. ``runs/tiny_cpu``) and writes ``reward_em.png``
(train/reward, train/em, val/em, val/<source>/em), ``searches.png`` (rollout/searches_mean),
``response_length.png`` (train/response_length) and ``kl.png`` (train/policy/kl) for the tags that were logged.
Needs matplotlib (``pip install 'searchr1[dev]'``).

Example::

    python tools/plot_run.py runs/tiny_cpu
    python tools/plot_run.py runs/tiny_cpu --out runs/tiny_cpu/plots
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """Command-line entry point (see the module docstring); returns the written PNG paths."""
    from searchr1.evaluation.plots import plot_run

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="run folder holding TensorBoard event files (searched recursively)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the PNGs (default: RUN_DIR)")
    args = parser.parse_args(argv)
    written = plot_run(args.run_dir, args.out)
    if not written:
        print(f"none of the plotted metrics were logged under {args.run_dir}")
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    main()
