"""``trainer.global_step`` counts rollout steps (``max_steps``, checkpoint names, ``every_n_train_steps``), a run
stopped by ``max_steps`` resumes with a larger one, and ``--ckpt_path last`` finds the newest ``last.ckpt`` of the
run (across logger ``version_N`` folders) or refuses, naming where it looked."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.loops.progress import _Progress, _ReadyCompletedTracker
from lightning.pytorch.trainer.states import TrainerFn

from searchr1.resources import PIPELINE_DEMO_CONFIG, default_config_path
from searchr1.training.resume import NoLastCheckpoint, last_checkpoints, resolve_last
from searchr1.training.step_count import (
    MANUAL_STEPS_KEY,
    global_step_from_rollout_steps,
    one_global_step,
    reopen_unfinished_epoch,
)

SEARCHR1 = str(Path(sys.executable).with_name("searchr1"))


def _fake_trainer(progress: _Progress) -> SimpleNamespace:
    manual = SimpleNamespace(optim_step_progress=progress)
    return SimpleNamespace(
        training=True, fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(manual_optimization=manual))
    )


def test_one_rollout_step_is_one_global_step_whatever_the_optimizer_steps() -> None:
    progress = _Progress.from_defaults(_ReadyCompletedTracker)
    trainer = _fake_trainer(progress)
    for updates in (3, 0, 5):  # e.g. policy + critic mini-batch steps; 0: a skipped update
        with one_global_step(trainer):
            for _ in range(updates):  # what Lightning's hooks around LightningOptimizer.step() do
                progress.increment_ready()
                progress.increment_completed()
    assert progress.total.completed == progress.total.ready == 3
    with pytest.raises(RuntimeError), one_global_step(trainer):  # a failed step is not counted as one
        progress.increment_ready()
        raise RuntimeError("boom")
    assert progress.total.completed == 3


def test_old_checkpoints_resume_on_the_rollout_step_scale() -> None:
    counter = {"total": {"ready": 30, "completed": 30}, "current": {"ready": 30, "completed": 30}}
    checkpoint = {"global_step": 30, "loops": {"fit_loop": {MANUAL_STEPS_KEY: counter}}}
    global_step_from_rollout_steps(checkpoint, 15)
    assert checkpoint["global_step"] == 15 and counter["total"] == {"ready": 15, "completed": 15}
    assert counter["current"] == {"ready": 15, "completed": 15}


def _stopped_trainer(batches_done: int, max_steps: int = 4) -> SimpleNamespace:
    epoch_loop = SimpleNamespace(
        global_step=4, batch_progress=SimpleNamespace(current=SimpleNamespace(completed=batches_done))
    )
    return SimpleNamespace(
        state=SimpleNamespace(fn=TrainerFn.FITTING),
        should_stop=False,
        num_training_batches=6,
        fit_loop=SimpleNamespace(max_steps=max_steps, epoch_loop=epoch_loop),
    )


def _closed_epoch() -> dict:
    closed = {"ready": 1, "started": 1, "processed": 1, "completed": 1}
    return {"epoch": 1, "loops": {"fit_loop": {"epoch_progress": {"total": dict(closed), "current": dict(closed)}}}}


def test_an_epoch_cut_short_by_max_steps_is_saved_as_still_running() -> None:
    checkpoint = _closed_epoch()
    reopen_unfinished_epoch(_stopped_trainer(batches_done=4), checkpoint)
    progress = checkpoint["loops"]["fit_loop"]["epoch_progress"]
    assert progress["current"] == progress["total"] == {"ready": 1, "started": 1, "processed": 0, "completed": 0}
    assert checkpoint["epoch"] == 0
    for trainer in (_stopped_trainer(batches_done=6), _stopped_trainer(batches_done=4, max_steps=-1)):
        untouched = _closed_epoch()  # all 6 batches ran, or no max_steps (nor a stop) ended the epoch
        reopen_unfinished_epoch(trainer, untouched)
        assert untouched == _closed_epoch()


def _touch(path: Path, mtime: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    os.utime(path, (mtime, mtime))
    return path


def test_ckpt_path_last_is_the_newest_last_ckpt_under_the_run(tmp_path) -> None:
    root = tmp_path / "run"
    _touch(root / "tensorboard" / "version_0" / "checkpoints" / "last.ckpt", 1_000)
    newest = _touch(root / "tensorboard" / "version_1" / "checkpoints" / "last.ckpt", 3_000)
    _touch(root / "tensorboard" / "version_2" / "checkpoints" / "epoch=0-step=3.ckpt", 4_000)  # not a last
    _touch(root / "tensorboard" / "version_2" / "checkpoints" / ".last.ckpt.abc.tmp", 5_000)  # a temp file
    other = _touch(tmp_path / "ckpt" / "last-v1.ckpt", 2_000)  # an explicit ModelCheckpoint(dirpath=...)
    trainer = SimpleNamespace(
        default_root_dir=str(root),
        logger=SimpleNamespace(save_dir=str(root)),
        checkpoint_callbacks=[SimpleNamespace(dirpath=str(tmp_path / "ckpt"))],
    )
    assert resolve_last(trainer) == newest.resolve()
    assert last_checkpoints([root.resolve(), (tmp_path / "ckpt").resolve()])[1:] == [
        other.resolve(),
        (root / "tensorboard" / "version_0" / "checkpoints" / "last.ckpt").resolve(),
    ]
    empty = SimpleNamespace(default_root_dir=str(tmp_path / "new"), logger=None, checkpoint_callbacks=[])
    with pytest.raises(NoLastCheckpoint, match=str(tmp_path / "new")):
        resolve_last(empty)


def test_cli_refuses_ckpt_path_last_without_a_checkpoint(tmp_path) -> None:
    from searchr1.cli import cli_main

    args = ["fit", "-c", default_config_path(PIPELINE_DEMO_CONFIG), "--ckpt_path", "last"]
    args += [f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}"]
    argv = sys.argv
    try:
        with pytest.raises(SystemExit) as info:
            cli_main(args)
    finally:
        sys.argv = argv
    assert "--ckpt_path last: no last.ckpt" in str(info.value.code) and str(tmp_path) in str(info.value.code)


# ------------------------------------------------------------------------------- the real command, end to end
OVERRIDES = """
trainer:
  default_root_dir: {run}
  limit_val_batches: 0
  enable_progress_bar: false
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args: {{save_dir: {run}, name: csv}}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{save_last: true, every_n_train_steps: 3, save_top_k: -1}}
"""


def _fit(run: Path, *extra: str) -> str:
    overrides = run / "overrides.yaml"
    overrides.write_text(OVERRIDES.format(run=run))
    cmd = [SEARCHR1, "fit", "-c", default_config_path(PIPELINE_DEMO_CONFIG), "-c", str(overrides), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=run, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _train_steps(run: Path) -> list[int]:
    """Logged ``step`` of every training row, over all CSV logger versions (the logger's step is per batch)."""
    steps = []
    for path in sorted(run.glob("csv/version_*/metrics.csv")):
        with open(path) as fh:
            steps += [int(row["step"]) for row in csv.DictReader(fh) if row.get("train/reward")]
    return steps


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_max_steps_counts_rollout_steps_and_resumes_with_a_larger_one(tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    _fit(run, "--trainer.max_steps=3")
    ckpts = run / "csv" / "version_0" / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("*.ckpt")) == ["epoch=0-step=3.ckpt", "last.ckpt"]
    first = torch.load(ckpts / "epoch=0-step=3.ckpt", map_location="cpu", weights_only=True)
    assert first["global_step"] == first["searchr1"]["rollout_steps"] == 3 and _train_steps(run) == [0, 1, 2]
    # 4 prompts x 4 samples in mini-batches of 8: two AdamW updates per rollout step
    assert int(first["optimizer_states"][0]["state"][0]["step"]) == 6

    # stopped by max_steps=4 after one more step: last.ckpt written at the end of fit, mid-epoch
    out = _fit(run, "--trainer.max_steps=4", "--ckpt_path", "last")
    assert f"--ckpt_path last -> {(ckpts / 'last.ckpt').resolve()}" in out
    second = torch.load(run / "csv" / "version_1" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert second["global_step"] == second["searchr1"]["rollout_steps"] == 4
    # ... and a larger max_steps trains on from it (before: the epoch was recorded complete, nothing trained)
    out = _fit(run, "--trainer.max_steps=5", "--ckpt_path", "last")
    assert "version_1/checkpoints/last.ckpt" in out
    third = torch.load(run / "csv" / "version_2" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert third["global_step"] == third["searchr1"]["rollout_steps"] == 5
    assert third["QADataModule"] == {"epoch": 0, "batches_consumed": 5}
    assert _train_steps(run) == [0, 1, 2, 3, 4]
