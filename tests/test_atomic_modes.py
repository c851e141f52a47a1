"""Crash-safe writes follow the umask (0644 files, 0755 folders under umask 022; 0600/0700 under 077): ``tempfile``
makes its files private, and checkpoints and exports used to stay so (an eval service could not read them)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from searchr1.atomic import atomic_torch_save, current_umask, write_dir_atomically


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_current_umask_reads_without_changing(umask):
    assert current_umask() == umask
    assert current_umask() == umask


def test_checkpoint_file_follows_umask(tmp_path, umask):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"w": 1}, path)
    assert mode(path) == 0o666 & ~umask  # 0o644 under umask 022


def test_export_folder_follows_umask(tmp_path, umask):
    def write(folder: Path) -> None:
        (folder / "config.json").write_text("{}")
        (folder / "sub").mkdir()

    target = write_dir_atomically(tmp_path / "hf" / "last", write)
    assert mode(target) == 0o777 & ~umask  # 0o755 under umask 022
    assert mode(target / "config.json") == 0o666 & ~umask
    assert mode(target / "sub") == 0o777 & ~umask
