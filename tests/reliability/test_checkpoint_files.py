"""What killed checkpoint writers leave behind: stale hidden temps removed (or a set-aside version restored) at the
next save in that folder, and a resume from an incomplete sharded folder refused naming the newest complete one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from searchr1.atomic import remove_stale_temps
from searchr1.training.checkpoint_io import AtomicCheckpointIO
from searchr1.training.sharded_checkpoint import MARKER, resume_problem


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The pid of a process that has exited (a writer killed earlier)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _folder(path: Path, *files: str) -> Path:
    path.mkdir()
    for name in files:
        (path / name).write_bytes(b"x" * 10)
    return path


def test_stale_temps_of_dead_writers_go_live_ones_stay(tmp_path, dead_pid):
    mine = os.getpid()
    dead_file = tmp_path / f".last.ckpt.{dead_pid}-k2j3h4.tmp"  # atomic_torch_save killed mid-write
    dead_file.write_bytes(b"half")
    dead_dir = _folder(tmp_path / f".step=4.ckpt.{dead_pid}-a1b2.tmp", "__0_0.distcp")  # a killed sharded save
    legacy = tmp_path / ".step=3.ckpt.abcd1234.tmp"  # a name from before pids were in temp names
    legacy.write_bytes(b"half")
    own = tmp_path / f".last.ckpt.{mine}-zz.tmp"  # this process is writing it (e.g. an async save)
    own.write_bytes(b"in flight")
    other_kind = _folder(tmp_path / f".last.{dead_pid}-q.tmp", "config.json")  # not a checkpoint: left alone
    # replace_dir killed between its two renames: the previous last.ckpt is set aside, last.ckpt is missing
    _folder(tmp_path / f".last.ckpt.old-{dead_pid}", MARKER, "__0_0.distcp")
    # killed after the second rename: the new step=2.ckpt is in place, the old one is garbage
    _folder(tmp_path / "step=2.ckpt", MARKER)
    _folder(tmp_path / f".step=2.ckpt.old-{dead_pid}", MARKER)

    found = remove_stale_temps(tmp_path)
    assert len(found) == 5
    assert not dead_file.exists() and not dead_dir.exists() and not legacy.exists()
    assert own.exists() and other_kind.exists()
    assert (tmp_path / "last.ckpt" / "__0_0.distcp").exists(), "the set-aside version is restored, not deleted"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == sorted([own.name, other_kind.name])


def test_atomic_checkpoint_io_cleans_its_folder_at_the_next_save(tmp_path, dead_pid):
    stale = tmp_path / f".last.ckpt.{dead_pid}-x9.tmp"
    stale.write_bytes(b"\0" * 1000)
    AtomicCheckpointIO().save_checkpoint({"step": 3}, tmp_path / "last.ckpt")
    assert not stale.exists()
    assert torch.load(tmp_path / "last.ckpt", weights_only=True) == {"step": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_resume_from_an_incomplete_sharded_folder_names_the_newest_complete(tmp_path):
    older = _folder(tmp_path / "step=1.ckpt", "meta.pt", "__0_0.distcp")
    (older / MARKER).write_text(json.dumps({"global_step": 1}))
    newer = _folder(tmp_path / "step=2.ckpt", "meta.pt", "__0_0.distcp")
    (newer / MARKER).write_text(json.dumps({"global_step": 2}))
    os.utime(older / MARKER, (1, 1))  # finished long before step=2
    cut = _folder(tmp_path / "last.ckpt", "meta.pt", "__0_0.distcp")  # the old in-place layout, cut short

    message = resume_problem(cut)
    assert message is not None and f"{cut} is an incomplete sharded checkpoint: it has no {MARKER}" in message
    assert message.endswith(f"Newest complete checkpoint there: {newer} (resume with --ckpt_path {newer})")
    assert resume_problem(newer) is None
    missing = resume_problem(tmp_path / "step=9.ckpt")
    assert missing is not None and missing.startswith(f"checkpoint {tmp_path / 'step=9.ckpt'} does not exist")
    lonely = _folder(tmp_path / "other", "meta.pt")
    assert resume_problem(_folder(lonely / "last.ckpt")).endswith(f"there is no complete checkpoint in {lonely}")
