"""What a training run prints: plain step lines when stdout is not a terminal (through the ``searchr1`` command,
stdout piped), the Ctrl-C report naming the last checkpoint, and short option errors."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar

from searchr1.resources import PIPELINE_DEMO_CONFIG, default_config_path
from searchr1.training.console import InterruptReport, StepLines, adapt_trainer_config, format_step, interrupt_message

ROOT = Path(__file__).resolve().parents[2]


def test_format_step_puts_reward_em_searches_first():
    line = format_step(3, 15, {"searches": 1.2, "em": 0.375, "reward": 0.4125, "kl": 0.01}, 12.34)
    assert line == "step 3/15  reward 0.412  em 0.375  searches 1.2  kl 0.01  12.3 s"
    assert format_step(7, None, {}, 1.0) == "step 7  1.0 s"


def test_piped_run_swaps_the_bar_for_step_lines():
    config = SimpleNamespace(callbacks=[RichProgressBar()], enable_progress_bar=None)
    adapt_trainer_config(config, interactive=False)
    kinds = [type(cb) for cb in config.callbacks]
    assert kinds == [InterruptReport, StepLines] and config.enable_progress_bar is False
    terminal = SimpleNamespace(callbacks=[RichProgressBar()], enable_progress_bar=True)
    adapt_trainer_config(terminal, interactive=True)
    assert [type(cb) for cb in terminal.callbacks] == [RichProgressBar, InterruptReport]
    quiet = SimpleNamespace(callbacks=None, enable_progress_bar=False)  # the user turned the bar off: no lines
    adapt_trainer_config(quiet, interactive=False)
    assert [type(cb) for cb in quiet.callbacks] == [InterruptReport]


def test_interrupt_message_names_the_newest_checkpoint(tmp_path):
    trainer = Trainer(callbacks=[ModelCheckpoint(dirpath=tmp_path)], logger=False, enable_progress_bar=False)
    assert "no checkpoint was written yet" in interrupt_message(trainer)
    old, new = tmp_path / "epoch=0-step=2.ckpt", tmp_path / "last.ckpt"
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    os.utime(old, (1, 1))
    message = interrupt_message(trainer)
    assert f"the last checkpoint is {new}" in message and f"--ckpt_path {new}" in message


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_fit_with_stdout_piped_prints_one_line_per_step(tmp_path):
    cmd = [str(Path(sys.executable).with_name("searchr1")), "fit", "-c", default_config_path(PIPELINE_DEMO_CONFIG)]
    cmd += [f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false", "--trainer.limit_train_batches=2"]
    cmd += ["--trainer.limit_val_batches=0", "--data.batch_size=2", "--model.algorithm.mini_batch_size=null"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=850)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = [line for line in proc.stdout.splitlines() if line.startswith("step ")]
    pattern = r"step (\d)/2  reward \S+  em \S+  searches \S+(  \S+ \S+)*  \d+\.\d s"
    assert [re.fullmatch(pattern, s).group(1) for s in steps] == ["1", "2"], proc.stdout[-3000:]
    assert proc.stdout.rstrip().splitlines()[-1] == steps[-1]  # nothing after the last step (no bar dump)
    assert "it/s" not in proc.stdout and "Epoch 0" not in proc.stdout  # no progress bar (the summary table stays)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ctrl_c_names_the_last_checkpoint(tmp_path):
    """A real SIGINT to a piped ``searchr1 fit`` once a checkpoint exists: stderr names it and how to resume."""
    cmd = [str(Path(sys.executable).with_name("searchr1")), "fit", "-c", default_config_path(PIPELINE_DEMO_CONFIG)]
    cmd += [f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false", "--trainer.limit_train_batches=50"]
    cmd += ["--trainer.limit_val_batches=0", "--data.batch_size=2", "--model.algorithm.mini_batch_size=null"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:  # one line per step (stdout is a pipe)
            if line.startswith("step ") and list(tmp_path.rglob("*.ckpt")):
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    found = re.search(r"the last checkpoint is (\S+\.ckpt)", err)
    assert found and Path(found.group(1)).is_file(), err[-3000:]
    assert f"--ckpt_path {found.group(1)}" in err


def test_print_config_with_comments(capsys):
    """``--print_config=comments`` (README) prints every option with its documentation (needs ruamel.yaml)."""
    from searchr1.cli import cli_main

    with pytest.raises(SystemExit) as info:
        cli_main(["--config", default_config_path(), "--print_config=comments"], run=False)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "policy_lr: 0.0001" in out
    assert "# policy learning rate (Search-R1: 1e-6)" in out  # the constructor's Args: line, as a comment
