"""Retrieval outages are loud: a dead URL stops ``fit`` before any model loads, a hung (SIGSTOP-ped) server costs
one timeout per search call, and failing searches during training warn on the terminal and raise an alarm.

Real server processes on loopback (our app behind ``FaultInjector``) and the real ``searchr1`` console script.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch.strategies import SingleDeviceStrategy

from searchr1.retrieval import BM25Retriever, HTTPRetriever, RetrievalError
from searchr1.retrieval.launch import free_port
from searchr1.testing import FaultyServerProcess
from searchr1.training.collapse_rules import Detector, default_rules, signal_values
from searchr1.training.scaling import SetupError
from searchr1.training.search_health import check_retriever

from .conftest import record_figure

SEARCHR1 = str(Path(sys.executable).with_name("searchr1"))


def run_fit(run: Path, *args: str, timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    """``searchr1 fit`` on the embedded default config (the synthetic task's warm start, which searches) with
    ``args``; returns the result and its wall seconds."""
    from searchr1.resources import DEFAULT_CONFIG, default_config_path

    run.mkdir(parents=True, exist_ok=True)
    cmd = [SEARCHR1, "fit", "-c", default_config_path(DEFAULT_CONFIG), f"--trainer.default_root_dir={run}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.monotonic()
    done = subprocess.run([*cmd, *args], cwd=run, env=env, capture_output=True, text=True, timeout=timeout)
    return done, time.monotonic() - start


def test_probe_of_a_dead_url_names_it_and_check_retriever_refuses() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    dead = HTTPRetriever(url, max_retries=3, backoff=0.05)
    start = time.monotonic()
    with pytest.raises(RetrievalError, match=rf"no retrieval server answers at {url}: .*cannot reach.*serve"):
        dead.probe()
    record_figure("outages/probe_dead_url_seconds", round(time.monotonic() - start, 2))
    strategy = SingleDeviceStrategy(torch.device("cpu"))
    with pytest.raises(SetupError, match=url):
        check_retriever(dead, strategy)
    check_retriever(object(), strategy)  # nothing to probe (an in-process retriever): passes


def test_search_failure_rule_by_hand() -> None:
    # 3 of 4 searches failed (0.75 > 0.1): an alarm at once (patience 1); 1 of 20 (0.05): none
    detector = Detector({"search_failures": default_rules()["search_failures"]})
    metrics = {"rollout/search_failure_rate": 0.05}
    assert detector.observe(signal_values(detector.rules, metrics), step=0) == []
    (alarm,) = detector.observe(signal_values(detector.rules, {"rollout/search_failure_rate": 0.75}), step=1)
    assert (alarm.signal, alarm.action, alarm.value, alarm.reason) == ("search_failures", "warn", 0.75,
                                                                      "above the ceiling 0.1")  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fit_with_a_dead_retrieval_server_refuses_to_start(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done, seconds = run_fit(
        tmp_path / "run", "--model.retriever=searchr1.retrieval.HTTPRetriever", f"--model.retriever.url={url}",
        timeout=280,
    )  # fmt: skip
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode != 0, done.stderr[-2000:]
    assert last.startswith("searchr1: error: no retrieval server answers at " + url), last
    assert "searchr1-retrieval serve" in last
    assert "Epoch" not in done.stdout + done.stderr and not (tmp_path / "run" / "tensorboard").exists()  # no training
    record_figure("outages/fit_dead_url_exit_seconds", round(seconds, 1))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_hung_server_costs_one_timeout_per_call_and_recovery_is_logged(index_dir, tmp_path, caplog) -> None:
    with FaultyServerProcess(index_dir, log_path=tmp_path / "server.log") as server:
        client = HTTPRetriever(server.url, timeout=1.0, max_retries=3, backoff=0.05)
        client.search(["ed wood"], 2)  # a kept-alive connection, as in a running trainer
        assert client.search(["the of and", "???"], 2) == [[], []]  # no indexed term: empty lists over the wire
        os.kill(server.pid, signal.SIGSTOP)
        try:
            start = time.monotonic()
            with caplog.at_level(logging.WARNING, logger="searchr1.retrieval"):
                with pytest.raises(RetrievalError, match=r"failed after 1 attempt: timed out after 1.0s"):
                    client.search(["eiffel tower"], 2)
                with pytest.raises(RetrievalError):
                    client.search(["paris"], 2)
            hung = time.monotonic() - start
        finally:
            os.kill(server.pid, signal.SIGCONT)
        with caplog.at_level(logging.WARNING, logger="searchr1.retrieval"):
            assert client.search(["eiffel tower"], 2)[0]
    lines = [r.getMessage() for r in caplog.records if r.name == "searchr1.retrieval"]
    assert len(lines) == 2 and "search failed: " in lines[0] and "answers again" in lines[1]  # once per outage
    record_figure("outages/hung_server_two_calls_seconds", round(hung, 2))  # 2 x 1 s, not 2 x 4 x 1 s


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_failing_searches_during_fit_warn_and_raise_the_alarm(tmp_path: Path) -> None:
    from searchr1.resources import package_path

    index = tmp_path / "index"
    BM25Retriever.build(package_path("pkg:assets/synthetic_task/corpus.jsonl"), str(index), stemmer="none")
    overrides = tmp_path / "outage.yaml"
    overrides.write_text(
        """
trainer:
  limit_train_batches: 2
  limit_val_batches: 0
  enable_progress_bar: false
  logger: false
  callbacks:
    - class_path: searchr1.training.callbacks.CollapseGuard
      init_args: {actions: {search_failures: stop}}
data: {batch_size: 2}
model: {algorithm: {n_samples: 4, mini_batch_size: 8}}
curves: {enabled: false}
"""
    )
    with FaultyServerProcess(index, log_path=tmp_path / "server.log") as server:
        server.set_fault("status", status=503, skip=1)  # the start-up probe passes, then every search fails
        done, seconds = run_fit(
            tmp_path / "run", "-c", str(overrides), "--model.retriever=searchr1.retrieval.HTTPRetriever",
            f"--model.retriever.url={server.url}", "--model.retriever.max_retries=0", timeout=580,
        )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode != 0, out[-3000:]
    assert f"searchr1: search failed: retrieval server {server.url} failed after 1 attempt: HTTP 503" in out, out
    assert "searchr1: alarm search_failures at step 0: rollout/search_failure_rate = 1, above the ceiling 0.1" in out
    assert "training collapse: search_failures" in out
    (alarms,) = list((tmp_path / "run").rglob("alarms.jsonl"))
    (row,) = [json.loads(line) for line in alarms.read_text().splitlines()]
    assert (row["signal"], row["decision"], row["value"]) == ("search_failures", "stop", 1.0)
    record_figure("outages/fit_failing_searches_stop_seconds", round(seconds, 1))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_ranks_agree_when_only_one_reaches_the_server(index_dir, tmp_path: Path) -> None:
    """Rank 0 reaches a live server, rank 1 a dead URL: both ranks refuse together (no rank left in a collective)."""
    dead = f"http://127.0.0.1:{free_port()}"
    with FaultyServerProcess(index_dir, log_path=tmp_path / "server.log") as server:
        done, seconds = run_fit(
            tmp_path / "run", "--trainer.devices=2", "--trainer.strategy=ddp",
            "--model.retriever=searchr1.testing.RankURLRetriever", f"--model.retriever.urls=[{server.url}, {dead}]",
            timeout=580,
        )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode != 0, out[-3000:]
    assert f"no retrieval server answers at {dead}" in out  # rank 1's own message
    assert "did not answer the probe of another rank" in out  # rank 0 stops too, naming why
    assert "Epoch" not in out
    record_figure("outages/two_ranks_one_dead_exit_seconds", round(seconds, 1))
