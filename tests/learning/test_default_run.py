"""The embedded default (``searchr1 fit`` with no config), as a new user runs it: a clean terminal, the summary
(``summary.json`` + table), curves, checkpoint and HF export; and, in full, that it learns to search."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from searchr1.quiet import ALLOWED

SEARCHR1 = str(Path(sys.executable).with_name("searchr1"))
ENV = {**{k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}, "TOKENIZERS_PARALLELISM": "false"}
"""What a user runs: Python's default warning filters (no PYTHONWARNINGS)."""
WARNING_LINE = re.compile(r"\.py:\d+: |Warning\b|deprecat|\bTip\b|^\[transformers\]", re.IGNORECASE)
"""What a warning looks like on the terminal: Python's ``file.py:N: Category: ...`` (Lightning prints
``file.py:N: message``), the word Warning, a deprecation, a tip, or a transformers logger line."""
KEYS = ("em_before", "em_after", "searches_before", "searches_after", "seconds")

pytestmark = pytest.mark.slow


def warnings_in(text: str) -> list[str]:
    """Terminal lines that look like a warning and match no entry of ``searchr1.quiet.ALLOWED``."""
    lines = [line for line in text.splitlines() if WARNING_LINE.search(line)]
    return [line for line in lines if not any(re.search(allowed, line) for allowed in ALLOWED)]


def test_warning_detector_sees_the_warnings_users_saw():
    seen = """/x/lightning/pytorch/loops/fit_loop.py:534: Found 33 module(s) in eval mode at the start of training.
/x/torch/nn/modules/module.py:1789: FutureWarning: `past_key_values` is deprecated and will be removed
[transformers] `past_key_values`/`cache_params` are deprecated. Use `cache` instead.
💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]
searchr1: run summary
held-out EM                        0.107       1.000"""
    assert len(warnings_in(seen)) == 4


def _fit(tmp_path: Path, *args: str, timeout: int) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run(
        [SEARCHR1, "fit", *args], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-6000:])
    summary = json.loads((tmp_path / "runs" / "learn_cpu" / "summary.json").read_text())
    return proc, summary


def test_default_fit_is_clean_and_reports(tmp_path):
    """The default config, shortened (2 steps, 16 held-out questions): no warning outside the allow-list, and the
    summary's ``em_before`` is the shipped warm start's greedy EM measured independently (``Evaluator``)."""
    from searchr1.data import read_examples
    from searchr1.evaluation import Evaluator
    from searchr1.models import load_causal_lm, load_tokenizer
    from searchr1.resources import package_path
    from searchr1.retrieval import BM25Retriever
    from searchr1.rollout import RolloutConfig
    from searchr1.rollout.backends.hf import HFBackend

    heldout = read_examples(package_path("pkg:assets/synthetic_task/heldout.jsonl"))[:16]
    small = tmp_path / "heldout16.jsonl"
    small.write_text("".join(json.dumps({"question": e.question, "golden_answers": list(e.golden_answers)}) + "\n"
                             for e in heldout))  # fmt: skip
    args = ["--trainer.limit_train_batches=2", "--trainer.val_check_interval=1", f"--data.val_files=[{small}]"]
    proc, summary = _fit(tmp_path, *args, "--data.val_batch_size=16", timeout=900)
    terminal = proc.stdout + proc.stderr
    assert warnings_in(terminal) == [], "\n".join(warnings_in(terminal))
    assert "searchr1: run summary" in proc.stdout and "searchr1 eval --model" in proc.stdout
    assert all(summary[k] is not None for k in KEYS) and summary["steps"] == 2 and summary["questions"] == 16
    at = tmp_path  # the summary's paths are as the user typed them: relative to where fit ran
    assert (at / summary["checkpoint"]).exists() and (at / summary["hf_export"] / "model.safetensors").exists()
    assert {Path(p).name for p in summary["curves"]} >= {"reward_em.png", "searches.png", "response_length.png"}
    assert all((at / p).stat().st_size > 1000 for p in summary["curves"])

    start = package_path("pkg:assets/synthetic_warm_start")
    tok = load_tokenizer(start)
    config = RolloutConfig(max_turns=2, max_response_tokens=32, max_obs_tokens=64, max_total_tokens=448,
                           max_prompt_tokens=192, topk=1, do_sample=False)  # fmt: skip
    retriever = BM25Retriever(corpus=package_path("pkg:assets/synthetic_task/corpus.jsonl"), stemmer="none")
    evaluator = Evaluator(HFBackend(load_causal_lm(start).eval(), tok), tok, retriever, "search_r1", config,
                          batch_size=16, show_progress=False)  # fmt: skip
    _, results = evaluator.run({"heldout": heldout})
    assert summary["em_before"] == pytest.approx(sum(r.em for r in results) / 16, abs=1 / 16 + 1e-9)
    assert summary["searches_before"] == pytest.approx(sum(r.num_searches for r in results) / 16, abs=2 / 16)


def test_default_fit_learns_to_search(tmp_path):
    """The whole default run (the acceptance of issue 21): held-out EM rises by >= 0.3 and the policy searches."""
    proc, summary = _fit(tmp_path, timeout=1800)
    assert warnings_in(proc.stdout + proc.stderr) == []
    assert summary["questions"] == 150 and summary["steps"] == 15
    assert summary["em_after"] - summary["em_before"] >= 0.3, summary
    assert summary["searches_after"] >= 1.0 > summary["searches_before"], summary


# The default on 2 DDP ranks (Lightning's launcher and torchrun): tests/scaling/test_multirank.py
