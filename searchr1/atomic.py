"""Crash-safe writes: a reader sees the old file or folder, or the new one, never a part.

A file is written to a hidden temp file next to its target, fsync-ed and ``os.replace``-d over it (atomic on
POSIX within one filesystem); a folder is built as a hidden temp folder next to its target and renamed into place.
The temp always sits next to the target, never in the system temp folder: that may be another filesystem, where a
"rename" is a copy a kill can cut short. ``tempfile`` creates its files 0600 and folders 0700 (private whatever the
umask); the finished file or folder gets the permissions a plain ``open``/``mkdir`` would (0644/0755 under umask
022), so an eval service or a teammate can read a checkpoint or an export.

Temp names carry the writer's process id (``.<target>.<pid>-<random>.tmp``, ``.<target>.old-<pid>``) so that
:func:`remove_stale_temps` can tell what a killed writer left behind (its process is gone) from what a live one is
writing; a checkpoint save calls it on its folder before writing.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename inside it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process umask: from ``/proc/self/status`` where Linux has it, else by setting it and putting it back
    (not atomic with respect to other threads creating files, hence only the fallback)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _as_if_created(path: Path, is_dir: bool) -> None:
    """Give a ``tempfile`` file or folder the mode a plain ``open``/``mkdir`` would (0666/0777 less the umask)."""
    os.chmod(path, (0o777 if is_dir else 0o666) & ~current_umask())


def follow_umask(folder: Path) -> None:
    """Give ``folder`` and everything in it the modes a plain ``open``/``mkdir`` would (0644/0755 under umask 022):
    ``tempfile`` folders and some writers (``safetensors`` writes its files 0600) are private whatever the umask."""
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            _as_if_created(path, is_dir=path.is_dir())


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)`` so that ``path`` is never seen half-written (temp file + fsync + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        _as_if_created(Path(tmp), is_dir=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished folder ``tmp`` to ``target``; an older ``target`` is renamed aside first, then deleted.

    ``target`` is never a mix of old and new files; between the two renames it briefly does not exist.
    """
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        _remove(old)
        os.replace(target, old)
    os.replace(tmp, target)
    fsync_dir(target.parent)
    if old is not None:
        _remove(old)


def write_dir_atomically(target: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a fresh temp folder next to ``target``, then rename it to ``target`` (replacing it).

    On any error the temp folder is removed and an existing ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent))
    try:
        write(tmp)
        follow_umask(tmp)
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _temp_prefix(target: Path) -> str:
    return f".{target.name}.{os.getpid()}-"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


# .<target>.<pid>-<random>.tmp (atomic writes), .<target>.<random>.tmp (before pids were in the names),
# .<target>.old-<pid> (replace_dir's previous version, between its two renames)
_TEMP = re.compile(r"^\.(?P<target>.+?)\.(?:(?P<pid>\d+)-)?[A-Za-z0-9_]+\.tmp$")
_OLD = re.compile(r"^\.(?P<target>.+)\.old-(?P<pid>\d+)$")


def remove_stale_temps(folder: str | Path, target_suffix: str = ".ckpt") -> list[Path]:
    """Remove the hidden temps that killed writers left in ``folder``; returns what was removed or restored.

    Only temps of targets whose name ends with ``target_suffix`` are touched, and only when the process that made
    them is gone (this process's own and other live processes' temps are kept). A previous version set aside by
    :func:`replace_dir` whose target is missing (a kill between its two renames) is renamed back, not removed.
    """
    folder, found = Path(folder), []
    if not folder.is_dir():
        return found
    for entry in sorted(folder.iterdir()):
        match = _TEMP.match(entry.name) or _OLD.match(entry.name)
        if match is None or not match["target"].endswith(target_suffix):
            continue
        pid = int(match["pid"]) if match["pid"] else None
        if pid is not None and (pid == os.getpid() or _process_alive(pid)):
            continue
        target = folder / match["target"]
        if match.re is _OLD and not target.exists():
            os.replace(entry, target)
        else:
            _remove(entry)
        found.append(entry)
    if found:
        fsync_dir(folder)
    return found
