"""Regenerate the shipped warm start of the embedded default (``searchr1/assets/synthetic_warm_start``).

The embedded default (``searchr1 fit`` with no config) runs GRPO on the synthetic knowledge task of seed 0
(``searchr1.data.synthetic``; its files are shipped too, in ``searchr1/assets/synthetic_task``) from this warm
start: the two SFT stages of ``tools/learn_synthetic.py``
(stage 1 learns to read retrieved passages, stage 2 teaches an imperfect teacher that guesses on 60 % of the
questions), so the greedy policy starts by guessing and RL has to find out that searching pays.

Both stages run on one CPU thread with fixed seeds, so the same torch / transformers / tokenizers versions
write the same bytes: the command ends by comparing every file's SHA-256 with ``MANIFEST.json`` (``--check``
fails on a difference; without it the assets folder is overwritten and the manifest rewritten).

    python tools/make_warm_start.py --check     # ~10-15 minutes on one core; compares with the shipped files
    python tools/make_warm_start.py             # rewrites searchr1/assets/synthetic_warm_start
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "searchr1" / "assets"
ASSET = ASSETS / "synthetic_warm_start"
TASK = ASSETS / "synthetic_task"
SEED = 0
"""The task seed of the embedded default."""
TASK_FILES = ("corpus.jsonl", "train.jsonl", "heldout.jsonl")


def _digests(model: Path, task: Path) -> dict[str, str]:
    """SHA-256 per shipped file (every file of the model folder, the task's three), keyed by its path under
    ``searchr1/assets``."""
    files = [(ASSET.name, model, p.name) for p in sorted(model.iterdir()) if p.is_file()]
    files += [(TASK.name, task, n) for n in TASK_FILES]
    return {f"{dest}/{name}": hashlib.sha256((src / name).read_bytes()).hexdigest() for dest, src, name in files}


def build(work: Path, reuse: bool) -> tuple[Path, Path]:
    """Both SFT stages of ``tools/learn_synthetic.py`` for seed 0 in ``work``; returns (stage-2 model, task) folders.

    ``reuse``: keep stages already complete in ``work`` (a stage is deterministic, so this only saves time).
    """
    sys.path.insert(0, str(ROOT / "tools"))
    from learn_synthetic import Plan, warm_start

    torch.set_num_threads(1)  # one thread: the same bytes on every run (and a fair share of a shared machine)
    if not reuse:
        shutil.rmtree(work, ignore_errors=True)
    warm = warm_start(work, SEED, Plan(variants=[], calibrate=False))  # the fixed 0.6 recipe it shipped with
    return warm.start, warm.prep.files.corpus.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="runs/make_warm_start", help="scratch folder for both stages")
    parser.add_argument("--check", action="store_true", help="compare with the shipped files instead of writing")
    parser.add_argument("--reuse", action="store_true", help="keep the stages already complete in --work")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    model, task = build(Path(args.work), args.reuse)
    found = _digests(model, task)
    print(f"[make_warm_start] both stages in {time.perf_counter() - t0:.0f} s")
    if args.check:
        shipped = json.loads((ASSET / "MANIFEST.json").read_text())["sha256"]
        bad = sorted(k for k in set(found) | set(shipped) if found.get(k) != shipped.get(k))
        print(f"[make_warm_start] {'differs: ' + ', '.join(bad) if bad else 'identical to the shipped files'}")
        return 1 if bad else 0
    for key in found:
        dest, name = key.split("/")
        (ASSETS / dest).mkdir(parents=True, exist_ok=True)
        shutil.copyfile((model if dest == ASSET.name else task) / name, ASSETS / key)
    versions = {"torch": torch.__version__}
    for mod in ("transformers", "tokenizers", "lightning"):
        versions[mod] = __import__(mod).__version__
    manifest = {"seed": SEED, "command": "python tools/make_warm_start.py", "versions": versions, "sha256": found}
    (ASSET / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"[make_warm_start] wrote {ASSET} and {TASK}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
