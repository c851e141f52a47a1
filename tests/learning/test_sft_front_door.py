"""``searchr1 sft`` from a fresh checkout: ``--help`` shows our usage, and the README's two commands
(``tools/learn_synthetic.py --prepare-sft``, then ``searchr1 sft fit -c configs/sft_synthetic.yaml``) run, the fit
printing its loss and where the model went."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from searchr1.__main__ import _sft

ROOT = Path(__file__).resolve().parents[2]


def test_sft_help_shows_our_usage(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["searchr1", "sft", "--help"])  # as the command runs it
    with pytest.raises(SystemExit) as info:
        _sft(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: searchr1 sft") and "configs/sft_synthetic.yaml" in out


def test_missing_trajectories_say_how_to_make_them(tmp_path):
    from searchr1.errors import UserError
    from searchr1.training.sft import SFTDataModule

    with pytest.raises(UserError, match="--prepare-sft"):
        SFTDataModule(str(tmp_path / "sft_data.jsonl")).setup("fit")


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_readme_sft_commands_from_a_fresh_folder(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    prepare = [sys.executable, str(ROOT / "tools" / "learn_synthetic.py"), "--prepare-sft"]
    prepare += ["--read-steps", "2", "--sft-worlds", "1"]  # the default stage 1 (1200 steps, ~5 min) is not needed
    proc = subprocess.run(prepare, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "runs/learn_synthetic/seed0/sft_data.jsonl").is_file()
    config = str(ROOT / "configs" / "sft_synthetic.yaml")
    fit = [str(Path(sys.executable).with_name("searchr1")), "sft", "fit", "-c", config]
    proc = subprocess.run(
        [*fit, "--trainer.max_steps=2"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"searchr1 sft: 2 steps, final training loss \d+\.\d{4}", proc.stdout), proc.stdout
    assert "model saved to runs/learn_synthetic/seed0/sft" in proc.stdout
    assert (tmp_path / "runs/learn_synthetic/seed0/sft/config.json").is_file()
