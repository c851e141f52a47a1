"""SIGTERM (what SLURM and Kubernetes send) to ``searchr1 fit``: the run saves ``last.ckpt`` after the current
rollout step, prints one line saying it was cut short and where the checkpoint is, exits 143 (128 + SIGTERM), and the
printed resume command finishes the run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from searchr1.testing import wait_for

from .conftest import record_figure

SEARCHR1 = str(Path(sys.executable).with_name("searchr1"))
STEPS = 4


def _fit(run: Path, *extra: str) -> subprocess.Popen:
    from searchr1.resources import PIPELINE_DEMO_CONFIG, default_config_path

    overlay = run.parent / "overlay.yaml"
    overlay.write_text(
        f"""
trainer:
  default_root_dir: {run}
  limit_train_batches: {STEPS}
  limit_val_batches: 0
  enable_progress_bar: false
  logger: false
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {run}/ckpt, save_last: true, every_n_train_steps: 1}}
    - class_path: searchr1.training.callbacks.SampleLogger
      init_args: {{every_n_steps: 1, num_samples: 1}}
"""
    )
    cmd = [SEARCHR1, "fit", "-c", default_config_path(PIPELINE_DEMO_CONFIG), "-c", str(overlay), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(cmd, cwd=run, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _first_step_done(run: Path) -> bool:
    return any(run.rglob("samples.jsonl"))  # SampleLogger writes at the end of every rollout step


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_sigterm_saves_says_where_and_exits_non_zero(tmp_path):
    run = tmp_path / "run"
    proc = _fit(run)
    try:
        wait_for(lambda: _first_step_done(run) or proc.poll() is not None, 300, "the first rollout step")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if "cut short" in line]
    assert len(lines) == 1, stderr[-3000:]
    found = re.fullmatch(
        r"searchr1: run cut short by SIGTERM after rollout step (\d+); checkpoint: (\S+) "
        r"\(resume: the same command with --ckpt_path (\S+)\)",
        lines[0],
    )
    assert found is not None and found[2] == found[3] == str(run / "ckpt" / "last.ckpt"), lines[0]
    steps = int(found[1])
    assert 1 <= steps < STEPS, "stopped after the step under way, not at the end"
    saved = torch.load(found[2], map_location="cpu", weights_only=True)
    assert saved["searchr1"]["rollout_steps"] == steps

    resumed = _fit(run, "--ckpt_path", found[2])
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr[-3000:]
    final = torch.load(run / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert final["searchr1"]["rollout_steps"] == STEPS
    record_figure("sigterm/stopped_after_step", steps)
