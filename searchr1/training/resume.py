"""``--ckpt_path last``: resume from the newest ``last.ckpt`` anywhere in the run's folders, or refuse.

Lightning resolves ``ckpt_path="last"`` inside the checkpoint folder of *this* run only. With a logger that makes a
new ``version_N`` folder per launch (TensorBoard/CSV, where ``ModelCheckpoint`` saves by default), that folder is
new and empty, so Lightning warns and trains from scratch, hinting ``save_last=True`` even when it is set. Here
``last`` means the newest ``last.ckpt`` (or ``last-vN.ckpt``; a file, or an FSDP2 distributed checkpoint folder)
within a few levels below the run's roots: ``trainer.default_root_dir``, the logger's ``save_dir`` and any explicit
``ModelCheckpoint(dirpath=...)``. Nothing found is an error that names the folders searched.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from searchr1.training.sharded_checkpoint import IncompleteCheckpointError, resume_problem

# <dirpath>/last.ckpt, <root>/checkpoints/, <root>/<logger name>/version_N/checkpoints/ (and a save_dir one above)
LAST_PATTERNS = ("last.ckpt", "last-v*.ckpt")
MAX_DEPTH = 4


class NoLastCheckpoint(FileNotFoundError):
    """``--ckpt_path last`` found no ``last.ckpt`` to resume."""


def run_roots(trainer: Any) -> list[Path]:
    """The folders a run writes checkpoints under (existing or not), without duplicates, in a stable order."""
    roots = [trainer.default_root_dir]
    save_dir = getattr(trainer.logger, "save_dir", None) if trainer.logger is not None else None
    roots.append(save_dir)
    roots += [getattr(cb, "dirpath", None) for cb in trainer.checkpoint_callbacks]
    unique: dict[Path, None] = {}
    for root in roots:
        if root:
            unique.setdefault(Path(root).expanduser().resolve(), None)
    return list(unique)


def _mtime(path: Path) -> float:
    meta = path / "meta.pt"  # a distributed checkpoint folder: its metadata file is written last
    return (meta if path.is_dir() and meta.exists() else path).stat().st_mtime


def last_checkpoints(roots: Iterable[Path], max_depth: int = MAX_DEPTH) -> list[Path]:
    """Every ``last.ckpt``/``last-vN.ckpt`` at most ``max_depth`` folders below one of ``roots``, newest first."""
    found: dict[Path, float] = {}
    for root in roots:
        for depth in range(max_depth + 1):
            for pattern in LAST_PATTERNS:
                for path in root.glob("/".join(["*"] * depth + [pattern])):
                    found.setdefault(path, _mtime(path))
    return sorted(found, key=lambda p: (found[p], str(p)), reverse=True)


def resolve_last(trainer: Any) -> Path:
    """The newest last checkpoint of the run of ``trainer``; :class:`NoLastCheckpoint` names the folders searched."""
    roots = run_roots(trainer)
    found = last_checkpoints(roots)
    if not found:
        where = ", ".join(str(r) for r in roots)
        raise NoLastCheckpoint(
            f"--ckpt_path last: no last.ckpt within {MAX_DEPTH} folder levels below {where}. Fix: pass the "
            "checkpoint file itself (--ckpt_path PATH), point trainer.default_root_dir at the run to resume, or "
            "leave --ckpt_path out to start a new run"
        )
    return found[0]


def check_resumable(ckpt_path: str | None) -> None:
    """Refuse a ``--ckpt_path`` folder whose sharded save did not finish, naming the newest complete checkpoint
    (:class:`IncompleteCheckpointError`); files, keywords (``last``, ``best``) and remote paths pass through."""
    if ckpt_path and Path(ckpt_path).is_dir():
        problem = resume_problem(Path(ckpt_path))
        if problem is not None:
            raise IncompleteCheckpointError(problem)
