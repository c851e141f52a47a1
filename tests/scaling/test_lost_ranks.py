"""What stops a 2-rank FSDP2 run from outside (gloo, CPU): SIGTERM reaching one rank only stops both after the same
rollout step with a complete checkpoint and exit 143; a rank that dies (SIGKILL) or hangs (SIGSTOP) makes the other
print one line naming it (no raw gloo traceback) and exit non-zero.

``ddp_worker.py`` runs the ranks under Lightning's launcher: rank 1 is a child process of rank 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from searchr1.testing import wait_for
from searchr1.training.sharded_checkpoint import MARKER

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
pytestmark = pytest.mark.slow


def _start(model: str, out: Path, timeout_s: int) -> subprocess.Popen:
    """Rank 0 (it starts rank 1); output to ``out/worker.log``, not pipes: a stopped rank 1 would hold them open."""
    cmd = [sys.executable, str(HERE / "ddp_worker.py"), "--model", model, "--out", str(out), "--strategy", "fsdp2"]
    cmd += ["--steps", "6", "--ckpt_every", "1", "--timeout_s", str(timeout_s)]
    log = open(out / "worker.log", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=ENV)


def _log(out: Path) -> str:
    return (out / "worker.log").read_text()


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _rank1_after_first_checkpoint(proc: subprocess.Popen, out: Path) -> int:
    """Rank 1's pid, once the step-1 checkpoint is complete (training is under way on both ranks)."""
    wait_for(lambda: (out / "ckpt" / "step=1.ckpt" / MARKER).exists() or proc.poll() is not None, 300, "step 1")
    assert proc.poll() is None, _log(out)[-3000:]
    (child,) = _children(proc.pid)
    return child


def _stop(*pids: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.kill(pid, signal.SIGKILL)


def test_sigterm_to_one_rank_stops_both_after_the_same_step(tmp_path, tiny_model_dir):
    proc = _start(tiny_model_dir, tmp_path, 120)
    rank1 = _rank1_after_first_checkpoint(proc, tmp_path)
    try:
        os.kill(rank1, signal.SIGTERM)  # not rank 0: the ranks must agree
        proc.wait(timeout=300)
        deadline = time.monotonic() + 60
        while Path(f"/proc/{rank1}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        _stop(proc.pid, rank1)
    stderr = _log(tmp_path)
    assert proc.returncode == 143, stderr[-3000:]
    (line,) = [x for x in stderr.splitlines() if "cut short" in x]
    last = tmp_path / "ckpt" / "last.ckpt"
    assert f"checkpoint: {last} " in line, line
    steps = int(line.split("after rollout step ")[1].split(";")[0])
    assert json.loads((last / MARKER).read_text())["global_step"] == steps < 6
    assert not Path(f"/proc/{rank1}").exists(), "rank 1 stopped too"


# a dead rank is found at once (gloo: "Connection closed by peer"); a hung one when rank 0's collective times out
# (45 s: the process-group timeout also bounds the start-up rendezvous, slow on a loaded machine)
@pytest.mark.parametrize(("how", "sig", "timeout_s"), [("dead", signal.SIGKILL, 120), ("hung", signal.SIGSTOP, 45)])
def test_a_lost_rank_is_named_in_one_line(tmp_path, tiny_model_dir, how, sig, timeout_s):
    proc = _start(tiny_model_dir, tmp_path, timeout_s)
    rank1 = _rank1_after_first_checkpoint(proc, tmp_path)
    started = time.monotonic()
    try:
        os.kill(rank1, sig)
        proc.wait(timeout=300)
    finally:
        _stop(proc.pid, rank1)
    waited, stderr = time.monotonic() - started, _log(tmp_path)
    # 1, or -9 when Lightning's child-process observer (it polls every 5 s) SIGKILLs rank 0 after the line
    assert proc.returncode in (1, -signal.SIGKILL), stderr[-3000:]
    lines = [x for x in stderr.splitlines() if "dead or hung" in x]
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith("searchr1: rank 1 of 2 did not answer: dead or hung; rank 0's collective failed (")
    assert "Traceback (most recent call last)" not in stderr, stderr[-3000:]
    assert f"Traceback: {tmp_path / 'error-rank0.txt'}" in lines[0]
    assert "Traceback" in (tmp_path / "error-rank0.txt").read_text()
    print(f"{how}: rank 0 stopped {waited:.1f} s after rank 1 was {how}")
