"""Acceptance of paid web search (issue 32): GRPO through ``searchr1 fit`` (the real CLI, the embedded default's tiny
warm-start policy, 2 steps) against a loopback fake of Serper answering from BM25 over the task's corpus.

One test, three runs: the first pays for its queries through a 429 burst that is retried and never becomes a failed
search, its cost is requests x price in the metrics, the cost log and ``summary.json``; the identical second run
sends nothing (disk cache); a third run with a small ``max_cost`` stops with a checkpoint and one clear message.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from searchr1.cli import cli_main
from searchr1.resources import default_config_path, package_path
from searchr1.retrieval import BM25Retriever
from searchr1.testing.fake_engines import FakeSearchEngines

KEY = "serper-SECRET-key-4242"
PRICE = 0.25  # exact in binary: sums compare with ==


@pytest.fixture(scope="module")
def fake():
    corpus = package_path("pkg:assets/synthetic_task/corpus.jsonl")
    bm25 = BM25Retriever(corpus=corpus, stemmer="none")
    with FakeSearchEngines(lambda q, k: [(p.title, p.text) for p in bm25.search([q], k)[0]], api_key=KEY) as engines:
        yield engines


def fit(tmp_path: Path, fake: FakeSearchEngines, name: str, cache: Path, max_cost: float | None = None):
    overlay = tmp_path / f"{name}.yaml"
    retriever = {
        "class_path": "searchr1.retrieval.SerperRetriever",
        "init_args": {
            "api_key_env": "TEST_SERPER_KEY",
            "base_url": fake.base_url("serper"),
            "price_per_query": PRICE,
            "max_cost": max_cost,
            "cache_dir": str(cache),
            "requests_per_second": 0,
            "backoff": 0.0,
        },
    }
    overlay.write_text(json.dumps({"model": {"retriever": retriever}}))
    root = tmp_path / name
    args = ["fit", "-c", default_config_path(), "-c", str(overlay), f"--trainer.default_root_dir={root}"]
    args += ["--trainer.logger=false", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=0"]
    args += ["--curves.enabled=false", "--data.batch_size=4", "--data.max_val_samples=4"]
    cli_main(args)
    return root


def cost_log(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "search_cost.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_cache_cost_rate_limits_and_max_cost_through_fit(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("TEST_SERPER_KEY", KEY)
    fake.rate_limit_burst(3)  # the first three searches of the run get 429 + Retry-After: 0
    first = fit(tmp_path, fake, "first", tmp_path / "cache")
    paid = fake.answered["serper"]
    assert paid > 0 and fake.received["serper"] == paid + 3
    log = cost_log(first)
    assert len(log) == 2 and log[-1]["rate_limited"] == 3 and log[-1]["attempts"] == paid + 3
    assert all(row["search_failures"] == 0 for row in log)  # every 429 was retried to an answer
    summary = json.loads((first / "summary.json").read_text())["search_cost"]
    assert summary["requests"] == paid and summary["cost"] == paid * PRICE == summary["scope_cost"]

    second = fit(tmp_path, fake, "second", tmp_path / "cache")  # identical run, same cache: nothing sent
    assert fake.answered["serper"] == paid and fake.received["serper"] == paid + 3
    summary = json.loads((second / "summary.json").read_text())["search_cost"]
    assert summary["requests"] == 0 and summary["cost"] == 0 and summary["disk_hits"] > 0

    budget = PRICE * max(1, paid // 2)  # a fresh cache: the run needs ~paid requests, may buy half
    with pytest.raises(SystemExit) as stop:
        fit(tmp_path, fake, "capped", tmp_path / "cache2", max_cost=budget)
    message = str(stop.value.code)
    ckpt = tmp_path / "capped" / "checkpoints" / "budget-exhausted.ckpt"
    assert "search budget exhausted" in message and str(ckpt) in message and "--ckpt_path" in message
    assert fake.answered["serper"] - paid == max(1, paid // 2)  # spent exactly up to the budget, not past it
    state = torch.load(ckpt, weights_only=False, map_location="cpu")
    assert "state_dict" in state
    for path in (ckpt, tmp_path / "first" / "config.yaml", tmp_path / "first" / "summary.json"):
        assert KEY.encode() not in path.read_bytes()  # the config holds the variable's name only
    assert "TEST_SERPER_KEY" in (tmp_path / "first" / "config.yaml").read_text()
