"""Crash-safe sharded (FSDP2) checkpoints: write aside, agree, rename into place; refuse incomplete folders.

Lightning's ``ModelParallelStrategy.save_checkpoint`` with ``save_distributed_checkpoint`` writes every rank's shards
and then rank 0's ``meta.pt`` (counters, data position, schedulers) into the target folder itself, overwriting an
older checkpoint there (``last.ckpt/`` at every save) and never through the ``CheckpointIO`` plugin. A kill between
the two leaves new weights with old counters, which a resume takes silently. :func:`save_sharded` instead writes a
hidden temp folder next to the target (``.<name>.<pid>-<random>.tmp``), then, once every rank has written its
shards (the distributed-checkpoint save gathers them), rank 0 writes ``meta.pt`` and the completeness marker
:data:`MARKER`, the ranks agree, and rank 0 renames the folder over the target (:func:`searchr1.atomic.replace_dir`:
the old one is kept aside until the new one is in place). :func:`resume_problem` is what a resume checks first:
a folder without the marker is refused, naming the newest complete checkpoint next to it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from searchr1.atomic import _temp_prefix, atomic_torch_save, remove_stale_temps, replace_dir

MARKER = "complete.json"
META = "meta.pt"  # Lightning's name for the non-tensor part (``lightning.fabric.utilities.load._METADATA_FILENAME``)


class IncompleteCheckpointError(RuntimeError):
    """A resume was asked from a checkpoint that was not written to the end."""


def new_temp_folder(target: Path) -> Path:
    """Rank 0, before a save: clear what killed saves left in the folder, make the hidden temp folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the checkpoint gets the usual folder permissions
    return tmp


def finish(tmp: Path, target: Path, metadata: dict[str, Any], world_size: int) -> None:
    """Rank 0, after every rank's shards are in ``tmp``: ``meta.pt``, the marker, then ``tmp`` → ``target``."""
    atomic_torch_save(metadata, tmp / META)
    marker = {"global_step": metadata.get("global_step"), "world_size": world_size, "saved_at": time.time()}
    (tmp / MARKER).write_text(json.dumps(marker))
    replace_dir(tmp, target)


def save_sharded(
    target: Path,
    write_shards: Callable[[Path], None],
    metadata: dict[str, Any],
    *,
    rank: int,
    world_size: int,
    broadcast: Callable[[Any], Any],
) -> None:
    """Write a sharded checkpoint to ``target`` so that it is whole or absent; every rank calls it.

    Args:
        target: the checkpoint folder (the same on every rank).
        write_shards: every rank's shard writer, e.g. ``torch.distributed.checkpoint.save`` into the folder given;
            a collective that returns once all ranks' files are written.
        metadata: what rank 0 writes as ``meta.pt`` (used on rank 0 only).
        rank, world_size: this rank and the number of ranks.
        broadcast: rank 0's object to every rank (the strategy's ``broadcast``).
    """
    tmp = Path(broadcast(str(new_temp_folder(target)) if rank == 0 else None))
    try:
        write_shards(tmp)
    except BaseException:  # a failed save (it fails on every rank) leaves no temp folder behind
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    problem = None
    if rank == 0:
        try:
            finish(tmp, target, metadata, world_size)
        except Exception as err:  # the other ranks wait for the answer: never leave them hanging
            problem = f"could not finish the checkpoint {target} (shards in {tmp}): {err}"
    problem = broadcast(problem)  # every rank waits for the rename, then goes on or fails together
    if problem is not None:
        raise OSError(problem)


def is_complete(path: Path) -> bool:
    """A checkpoint file (written atomically) or a sharded folder with the completeness marker."""
    return path.is_file() or (path / MARKER).is_file()


def newest_complete(folder: Path, exclude: Path | None = None) -> Path | None:
    """The most recently finished complete checkpoint (``*.ckpt`` file or marked folder) in ``folder``, or None."""
    if not folder.is_dir():
        return None
    found = []
    for entry in folder.iterdir():
        if entry == exclude or entry.name.startswith(".") or entry.suffix != ".ckpt" or not is_complete(entry):
            continue
        found.append(((entry / MARKER if entry.is_dir() else entry).stat().st_mtime, entry))
    return max(found)[1] if found else None


def resume_problem(path: Path) -> str | None:
    """Why resuming from ``path`` must be refused (None: it is a complete checkpoint)."""
    if is_complete(path):
        return None
    if path.is_dir():
        what = (
            f"{path} is an incomplete sharded checkpoint: it has no {MARKER} (its save was cut short, or it was "
            "written without searchr1's FSDP2Strategy; if you know it is whole, create that file and retry)"
        )
    else:
        what = f"checkpoint {path} does not exist"
    newest = newest_complete(path.parent, exclude=path)
    if newest is None:
        return f"{what}; there is no complete checkpoint in {path.parent}"
    # the newest checkpoint on its own line: a console that shortens the message never cuts it
    return f"{what}.\nNewest complete checkpoint there: {newest} (resume with --ckpt_path {newest})"
