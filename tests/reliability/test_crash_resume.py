"""SIGKILL ``searchr1 fit`` mid-step, resume from ``last.ckpt``, and match an uninterrupted run exactly.

Real subprocesses of the ``searchr1`` command on the embedded tiny default config (4 rollout steps, a checkpoint
every step written by ``AtomicCheckpointIO``, HF exports by ``ExportPretrained``). Run A trains 4 steps in one go;
run B is killed with SIGKILL during step 3; run C resumes B with ``--ckpt_path last.ckpt``. The logged metrics of
the steps C runs and the parameters of the final ``last.ckpt`` must equal A's.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from searchr1.testing import wait_for
from searchr1.training.checkpoint_io import AtomicCheckpointIO, ExportPretrained, atomic_torch_save

from .conftest import record_figure

STEPS = 4
SEARCHR1 = str(Path(sys.executable).with_name("searchr1"))


def write_config(run: Path) -> Path:
    """Overrides of the embedded default: 4 steps, no validation, CSV logs, a checkpoint every step."""
    path = run.parent / f"{run.name}.yaml"
    path.write_text(
        f"""
trainer:
  default_root_dir: {run}
  limit_train_batches: {STEPS}
  limit_val_batches: 0
  enable_progress_bar: false
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args: {{save_dir: {run}, name: csv}}
  plugins:
    - class_path: searchr1.training.checkpoint_io.AtomicCheckpointIO
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {run}/ckpt, save_last: true, every_n_train_steps: 1, save_top_k: -1}}
    - class_path: searchr1.training.checkpoint_io.ExportPretrained
      init_args: {{every_n_steps: 2}}
"""
    )
    return path


def start_fit(run: Path, *extra: str) -> subprocess.Popen:
    from searchr1.resources import PIPELINE_DEMO_CONFIG, default_config_path

    run.mkdir(parents=True, exist_ok=True)
    cmd = [SEARCHR1, "fit", "-c", default_config_path(PIPELINE_DEMO_CONFIG), "-c", str(write_config(run)), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log = open(run / "fit.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, cwd=run, env=env, stdout=log, stderr=subprocess.STDOUT)


def step_checkpoints(run: Path) -> list[Path]:
    return sorted(p for p in (run / "ckpt").glob("*.ckpt") if p.name != "last.ckpt") if (run / "ckpt").exists() else []


def metrics_by_step(run: Path) -> dict[int, dict[str, float]]:
    """Logged training metrics of every rollout step, from all CSV logger versions of a run."""
    rows: dict[int, dict[str, float]] = {}
    for path in sorted(run.glob("csv/version_*/metrics.csv")):
        with open(path) as fh:
            for row in csv.DictReader(fh):
                values = {k: float(v) for k, v in row.items() if v not in ("", None) and k.startswith("train/")}
                if values:
                    rows.setdefault(int(row["step"]), {}).update(values)
    return rows


def finish(proc: subprocess.Popen, run: Path, timeout: float) -> None:
    assert proc.wait(timeout=timeout) == 0, (run / "fit.log").read_text()[-3000:]


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_sigkill_mid_step_then_resume_matches_uninterrupted(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    proc_a, proc_b = start_fit(a), start_fit(b)  # in parallel, one thread each
    try:
        wait_for(lambda: len(step_checkpoints(b)) >= 2 or proc_b.poll() is not None, 300, "run B's 2nd checkpoint")
        assert proc_b.poll() is None, (b / "fit.log").read_text()[-3000:]
        time.sleep(1.0)  # into step 3
        os.kill(proc_b.pid, signal.SIGKILL)
        assert proc_b.wait(timeout=30) == -signal.SIGKILL
        finish(proc_a, a, 300)
    finally:
        for proc in (proc_a, proc_b):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    killed = torch.load(b / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    resumed_from = killed["searchr1"]["rollout_steps"]
    # last.ckpt is a whole checkpoint of a finished step (step 2, or 3 when step 3 finished within the 1 s),
    # and at least one step is left for the resumed run to redo
    assert 2 <= resumed_from < STEPS, resumed_from
    proc_c = start_fit(b, "--ckpt_path", str(b / "ckpt" / "last.ckpt"))
    finish(proc_c, b, 300)

    final_a = torch.load(a / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    final_b = torch.load(b / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert final_a["searchr1"]["rollout_steps"] == final_b["searchr1"]["rollout_steps"] == STEPS
    state_a, state_b = final_a["state_dict"], final_b["state_dict"]
    assert state_a.keys() == state_b.keys()
    max_diff = max((state_a[k].float() - state_b[k].float()).abs().max().item() for k in state_a)
    assert max_diff == 0.0, f"resumed parameters differ from the uninterrupted run by up to {max_diff}"
    metrics_a, metrics_b = metrics_by_step(a), metrics_by_step(b)
    resumed_steps = sorted(metrics_b)[-(STEPS - resumed_from) :]
    compared = 0
    for step in resumed_steps:
        for key in ("train/reward", "train/policy/pg_loss", "train/response_length", "train/policy/kl"):
            if key in metrics_a[step]:
                assert metrics_b[step][key] == pytest.approx(metrics_a[step][key], rel=1e-6, abs=1e-9), (step, key)
                compared += 1
    assert compared >= 3 * len(resumed_steps)
    # the HF export of the final weights loads with from_pretrained and equals the checkpoint
    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(a / "hf" / "last")
    for name, param in exported.named_parameters():
        assert torch.equal(param, state_a[f"policy.{name}"]), name
    assert (a / "hf" / "step_2" / "config.json").exists() and (a / "hf" / "last" / "tokenizer_config.json").exists()
    record_figure("resume/killed_after_step", resumed_from)
    record_figure("resume/max_param_diff", max_diff)
    record_figure("resume/metrics_compared", compared)
    record_figure("resume/param_tensors_compared", len(state_a))


KILL_WRITER = """
import sys, torch
from searchr1.training.checkpoint_io import AtomicCheckpointIO
io, path, i = AtomicCheckpointIO(), sys.argv[1], 0
while True:
    io.save_checkpoint({"version": i, "w": torch.full((4_000_000,), float(i))}, path)
    i += 1
"""


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_killed_writer_never_leaves_a_partial_checkpoint(tmp_path):
    """SIGKILL a process rewriting a 16 MB checkpoint in a loop, at several moments: the file always loads whole."""
    path = tmp_path / "last.ckpt"
    loads = 0
    for delay in (0.3, 0.55, 0.8):
        proc = subprocess.Popen([sys.executable, "-c", KILL_WRITER, str(path)])
        try:
            wait_for(path.exists, 60, "the first checkpoint")
            time.sleep(delay)
        finally:
            proc.kill()
            proc.wait()
        state = torch.load(path, weights_only=True)
        assert torch.equal(state["w"], torch.full((4_000_000,), float(state["version"])))
        loads += 1
    assert list(tmp_path.glob("last.ckpt*")) == [path]  # temp files are hidden (".last.ckpt.*.tmp")
    record_figure("resume/killed_writes_loaded_whole", loads)
    # what the killed writers left (a 16 MB temp each, when the kill landed mid-write) goes at the next save there
    stale = list(tmp_path.glob(".last.ckpt.*.tmp"))
    AtomicCheckpointIO().save_checkpoint({"version": -1}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    record_figure("resume/stale_temps_removed_at_next_save", len(stale))


def test_atomic_save_failure_keeps_previous_file(tmp_path):
    path = tmp_path / "x.ckpt"
    AtomicCheckpointIO().save_checkpoint({"v": torch.tensor(1)}, path)
    with pytest.raises(Exception):  # noqa: B017 - whatever torch.save raises for an unpicklable object
        atomic_torch_save({"v": torch.tensor(2), "bad": lambda: None}, path)
    assert torch.load(path, weights_only=True)["v"].item() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["x.ckpt"]  # no temp file left behind


def test_export_pretrained_rejects_negative_period():
    with pytest.raises(ValueError, match="every_n_steps must be >= 0"):
        ExportPretrained(every_n_steps=-1)
