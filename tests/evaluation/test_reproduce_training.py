"""The ``searchr1 eval`` / ``searchr1 infer`` commands that ``searchr1 fit`` prints under ``next:`` reproduce the
run: the whole embedded default runs through the console script (the session's ``default_fit``, shared with
``tests/learning/test_default_run.py``), then the exact printed
commands run, and eval's held-out EM equals ``summary.json``'s (greedy both times, the run's own rollout and BM25
settings read from the HF export's ``searchr1_run.json``, and from the ``.ckpt``)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

SEARCHR1 = str(Path(sys.executable).with_name("searchr1"))


def _run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}  # the fit's environment (tests/conftest.py: default_fit)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _printed(out: str, command: str) -> list[str]:
    """The printed ``searchr1 <command> ...`` line under ``next:``, as an argv for this interpreter's script."""
    (line,) = [x.strip() for x in out.splitlines() if x.strip().startswith(f"searchr1 {command} ")]
    return [SEARCHR1, *shlex.split(line)[1:]]


def _eval_em(out: str, cwd: Path) -> tuple[float, int]:
    """EM and question count of the ``heldout`` set from the ``scores.json`` the eval run says it wrote."""
    folder = next(x.split()[1] for x in out.splitlines() if x.startswith("wrote "))  # wrote <scores.md>, ...
    scores = json.loads((cwd / Path(folder.rstrip(",")).parent / "scores.json").read_text())
    (row,) = [d for d in scores["datasets"] if d["name"] == "heldout"]
    return row["em"], row["questions"]


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_printed_eval_and_infer_reproduce_the_run(default_fit) -> None:
    tmp_path, fit, summary = default_fit  # the whole embedded default, shared with tests/learning/test_default_run.py
    out = fit.stdout
    assert (tmp_path / summary["hf_export"] / "searchr1_run.json").is_file()

    eval_cmd = _printed(out, "eval")
    printed = _run(eval_cmd, tmp_path)
    assert "searchr1: settings from the run" in printed and "topk=1" in printed and "bm25 stemmer=none" in printed
    # summary.json holds a float32 mean: equal to eval's up to float32 rounding, i.e. the same questions right
    expected = (pytest.approx(summary["em_after"], abs=1e-6), summary["questions"])
    assert _eval_em(printed, tmp_path) == expected
    # the Lightning checkpoint carries the same settings
    at_ckpt = [*eval_cmd, "--model", summary["checkpoint"], "--out", str(tmp_path / "eval_ckpt")]
    assert _eval_em(_run(at_ckpt, tmp_path), tmp_path) == expected

    answered = _run(_printed(out, "infer"), tmp_path)
    assert "[answer]" in answered and "finished by max_turns" not in answered, answered[-2000:]
