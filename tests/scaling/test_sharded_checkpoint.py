"""Crash-safe sharded (FSDP2) checkpoints on 2 CPU ranks (gloo): SIGKILL both ranks in the middle of a sharded save,
then resume as the refusal message says, and match the uninterrupted run.

``ddp_worker.py --stall_save 4`` makes each rank's 4th sharded save (``last.ckpt`` after rollout step 2; the 3rd is
``step=2.ckpt``) hang once its shards are written; the test kills both ranks there.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from searchr1.testing import wait_for
from searchr1.training.sharded_checkpoint import MARKER

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
pytestmark = pytest.mark.slow


def _worker(model: str, out: Path, *extra: str) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(HERE / "ddp_worker.py"), "--model", model, "--out", str(out), "--strategy", "fsdp2"]
    cmd += ["--steps", "3", "--ckpt_every", "1", "--save_last", "--timeout_s", "120", *extra]
    with socket.socket() as s:  # two runs start at once: each its own rendezvous port
        s.bind(("127.0.0.1", 0))
        env = {**ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(s.getsockname()[1])}
    log = open(out / f"worker{len(list(out.glob('worker*.log')))}.log", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> int:
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.timeout(600)
def test_sigkill_of_both_ranks_during_a_sharded_save_then_resume(tmp_path, tiny_model_dir):
    full, killed = tmp_path / "full", tmp_path / "killed"
    a, b = _worker(tiny_model_dir, full), _worker(tiny_model_dir, killed, "--stall_save", "4")
    try:
        stalled = [killed / f"stalled.rank{r}" for r in (0, 1)]
        wait_for(lambda: all(p.exists() for p in stalled) or b.poll() is not None, 300, "both ranks inside the save")
        assert b.poll() is None, (killed / "worker0.log").read_text()[-3000:]
        for path in stalled:
            os.kill(json.loads(path.read_text())["pid"], signal.SIGKILL)
        assert _finish(b, 30) == -signal.SIGKILL
        assert _finish(a) == 0, (full / "worker0.log").read_text()[-3000:]
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    ckpt = killed / "ckpt"
    # the interrupted save is a hidden temp folder with both ranks' shards but no marker; last.ckpt is untouched:
    # the complete save of step 1 (the old layout had step-2 shards under step-1 meta.pt here)
    (temp,) = [p for p in ckpt.iterdir() if p.name.startswith(".last.ckpt.") and p.name.endswith(".tmp")]
    assert len(list(temp.glob("*.distcp"))) == 2 and not (temp / MARKER).exists()
    assert json.loads((ckpt / "last.ckpt" / MARKER).read_text())["global_step"] == 1
    assert (ckpt / "step=2.ckpt" / MARKER).exists()

    # resuming from the incomplete folder is refused on every rank, naming the newest complete checkpoint
    refused = _worker(tiny_model_dir, tmp_path / "refused", "--resume", str(temp))
    assert _finish(refused) != 0
    log = (tmp_path / "refused" / "worker0.log").read_text()
    assert f"{temp} is an incomplete sharded checkpoint" in log, log[-3000:]
    newest = re.search(r"Newest complete checkpoint there: (\S+) \(resume with --ckpt_path", log)
    assert newest is not None and Path(newest[1]) == ckpt / "step=2.ckpt", log[-3000:]

    # resume as told, in the killed run's folder: the last step equals the uninterrupted run's, bit for bit
    started = time.time()
    resumed = _worker(tiny_model_dir, killed, "--resume", newest[1])
    assert _finish(resumed) == 0, sorted(killed.glob("worker*.log"))[-1].read_text()[-3000:]
    for rank in (0, 1):
        a_w, b_w = torch.load(full / f"rank{rank}.pt"), torch.load(killed / f"rank{rank}.pt")
        assert a_w.keys() == b_w.keys() and all(torch.equal(a_w[k], b_w[k]) for k in a_w)
        (step,) = json.loads((killed / f"rank{rank}.json").read_text())["steps"]
        assert step["param_sums"] == json.loads((full / f"rank{rank}.json").read_text())["steps"][2]["param_sums"]
    # the killed save's temp folder went at the next save in that folder; every checkpoint there is complete
    assert not temp.exists() and not [p for p in ckpt.iterdir() if p.name.startswith(".")]
    assert all((p / MARKER).exists() for p in ckpt.iterdir())
    assert (ckpt / "last.ckpt" / MARKER).stat().st_mtime >= started
