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


@pytest.mark.timeout(2400)  # the first test of the session to ask for default_fit runs it
def test_default_fit_is_clean_and_reports(default_fit):
    """No warning outside the allow-list on the terminal; the summary (its files exist, the search-quality shares,
    the search log and report.html); its ``em_before`` is the shipped warm start's greedy EM on the 150 held-out
    questions measured independently (``Evaluator``)."""
    from searchr1.data import read_examples
    from searchr1.evaluation import Evaluator
    from searchr1.models import load_causal_lm, load_tokenizer
    from searchr1.resources import package_path
    from searchr1.retrieval import BM25Retriever
    from searchr1.rollout import RolloutConfig
    from searchr1.rollout.backends.hf import HFBackend

    at, proc, summary = default_fit  # the summary's paths are as the user typed them: relative to where fit ran
    terminal = proc.stdout + proc.stderr
    assert warnings_in(terminal) == [], "\n".join(warnings_in(terminal))
    assert "searchr1: run summary" in proc.stdout and "searchr1 eval --model" in proc.stdout
    assert all(summary[k] is not None for k in KEYS) and summary["steps"] == 15 and summary["questions"] == 150
    assert (at / summary["checkpoint"]).exists() and (at / summary["hf_export"] / "model.safetensors").exists()
    assert {Path(p).name for p in summary["curves"]} >= {"reward_em.png", "searches.png", "response_length.png"}
    assert all((at / p).stat().st_size > 1000 for p in summary["curves"])
    _check_search_quality_and_report(at, summary, proc.stdout, steps=15)

    heldout = read_examples(package_path("pkg:assets/synthetic_task/heldout.jsonl"))
    start = package_path("pkg:assets/synthetic_warm_start")
    tok = load_tokenizer(start)
    config = RolloutConfig(max_turns=2, max_response_tokens=32, max_obs_tokens=64, max_total_tokens=448,
                           max_prompt_tokens=192, topk=1, do_sample=False)  # fmt: skip
    retriever = BM25Retriever(corpus=package_path("pkg:assets/synthetic_task/corpus.jsonl"), stemmer="none")
    evaluator = Evaluator(HFBackend(load_causal_lm(start).eval(), tok), tok, retriever, "search_r1", config,
                          batch_size=50, show_progress=False)  # fmt: skip
    _, results = evaluator.run({"heldout": heldout})
    n = len(heldout)
    assert n == 150
    assert summary["em_before"] == pytest.approx(sum(r.em for r in results) / n, abs=1 / n + 1e-9)
    assert summary["searches_before"] == pytest.approx(sum(r.num_searches for r in results) / n, abs=2 / n)


@pytest.mark.timeout(2400)
def test_default_fit_learns_to_search(default_fit):
    """The whole default run (the acceptance of issue 21): held-out EM rises by >= 0.3 and the policy searches."""
    at, _, summary = default_fit
    assert summary["questions"] == 150 and summary["steps"] == 15
    assert summary["em_after"] - summary["em_before"] >= 0.3, summary
    assert summary["searches_after"] >= 1.0 > summary["searches_before"], summary
    _check_replay(at, summary)


def _check_search_quality_and_report(at: Path, summary: dict, stdout: str, steps: int) -> None:
    """summary.json's outcome shares (with EM they sum to 1), the search log, and report.html in a real browser."""
    from searchr1.retrieval.search_log import read_search_log
    from tests.evaluation.browser import dump_dom

    for when in ("before", "after"):
        shares = [summary[f"failure_{c}_{when}"] for c in ("never_searched", "not_retrieved", "misread")]
        assert summary[f"em_{when}"] + sum(shares) == pytest.approx(1.0), summary
        assert 0.0 <= summary[f"answer_in_retrieved_{when}"] <= 1.0
    root = at / summary["root_dir"]
    log = read_search_log(root / "search_log.parquet")
    train = [r for r in log if r.phase == "train"]  # validation rows (phase val) carry the steps done: 1..steps
    assert {r.step for r in train} <= set(range(steps)) and all(r.server == "BM25Retriever" for r in log)
    assert {r.phase for r in log} <= {"train", "val"}
    assert {r.step for r in log if r.phase == "val"} <= set(range(1, steps + 1))
    rows = (root / "trajectories.jsonl").read_text().splitlines()
    assert len(rows) == 4 * steps  # RunRecorder's samples_per_step
    report = root / "report.html"
    assert f"report:      {summary['root_dir']}/report.html" in stdout and report.is_file()
    dom = dump_dom(report)
    assert dom.count('<div class="traj"') == len(rows) and f'data-shown="{len(rows)}"' in dom
    segments = [kind for row in rows for kind, _ in json.loads(row)["segments"]]
    assert dom.count('class="policy" data-mask="1"') == segments.count("policy") > 0
    assert dom.count('class="observation" data-mask="0"') == segments.count("observation")
    assert dom.count("<svg") >= 3  # reward/EM, searches, outcome shares


def _check_replay(at: Path, summary: dict) -> None:
    """``searchr1 eval`` (greedy) of the trained policy, then again from its search log only: same trajectories."""
    model, corpus = at / summary["hf_export"], summary["corpus"]
    heldout = (Path(summary["val_files"][0])).read_text().splitlines()[:12]
    (at / "q.jsonl").write_text("\n".join(heldout) + "\n")
    common = ["eval", "--model", str(model), "--datasets", f"h={at / 'q.jsonl'}", "--device", "cpu", "--no-progress"]
    common += ["--max-turns", "2", "--max-response-tokens", "32", "--max-obs-tokens", "64", "--topk", "1"]
    common += ["--max-total-tokens", "448", "--max-prompt-tokens", "192"]
    for args in (
        ["--corpus", corpus, "--out", str(at / "e1")],
        ["--replay", str(at / "e1" / "search_r1" / "search_log.parquet"), "--out", str(at / "e2")],
    ):
        proc = subprocess.run([SEARCHR1, *common, *args], cwd=at, env=ENV, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = ((at / e / "search_r1" / "trajectories.jsonl").read_text() for e in ("e1", "e2"))
    assert sum(json.loads(line)["num_searches"] for line in first.splitlines()) >= 6  # the trained policy searches
    assert first == second
    scores = [json.loads((at / e / "search_r1" / "scores.json").read_text())["datasets"] for e in ("e1", "e2")]
    assert scores[0] == scores[1]


# The default on 2 DDP ranks (Lightning's launcher and torchrun): tests/scaling/test_multirank.py
