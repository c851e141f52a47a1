"""Asynchronous training through the real CLI (``searchr1 fit -c configs/learn_cpu_async.yaml``, shortened): the
summary's ``async`` object (staleness within the bound, every group trained once, nothing dropped), the
``max_staleness: 0`` async path against the synchronous one, and a rollout server killed mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from searchr1.resources import package_path

pytestmark = pytest.mark.slow

SEARCHR1 = str(Path(sys.executable).with_name("searchr1"))
ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}  # same kernels in every run
BATCH, SAMPLES = 4, 4


def _args(tmp: Path, config: str, steps: int, *extra: str) -> list[str]:
    heldout = tmp / "heldout.jsonl"
    if not heldout.exists():  # 8 held-out questions keep the before/after evaluation short
        rows = Path(package_path("pkg:assets/synthetic_task/heldout.jsonl")).read_text().splitlines()[:8]
        heldout.write_text("\n".join(rows) + "\n")
    return [
        SEARCHR1, "fit", "-c", str(ROOT / "configs" / config),
        f"--trainer.limit_train_batches={steps}", "--trainer.val_check_interval=null",
        "--trainer.check_val_every_n_epoch=1", "--trainer.limit_val_batches=0",
        f"--trainer.default_root_dir={tmp / 'run'}", f"--trainer.logger.init_args.save_dir={tmp / 'run'}",
        f"--data.batch_size={BATCH}", f"--model.algorithm.n_samples={SAMPLES}",
        f"--model.algorithm.mini_batch_size={BATCH * SAMPLES}",
        f"--data.val_files=[{heldout}]", "--data.val_batch_size=8", "--curves.enabled=false", *extra,
    ]  # fmt: skip


def _fit(tmp: Path, config: str, steps: int, *extra: str) -> dict:
    return _finish(_start(tmp, config, steps, *extra), tmp)


def _start(tmp: Path, config: str, steps: int, *extra: str) -> subprocess.Popen:
    """``searchr1 fit`` in the background, its output to ``tmp/fit.log`` (one torch thread: ``ENV``)."""
    log = open(tmp / "fit.log", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(_args(tmp, config, steps, *extra), cwd=tmp, env=ENV, stdout=log, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen, tmp: Path, timeout: float = 900) -> dict:
    try:
        code = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, (tmp / "fit.log").read_text()[-5000:]
    return json.loads((tmp / "run" / "summary.json").read_text())


def test_async_fit_bounds_staleness_and_trains_every_group_once(tmp_path):
    steps = 5
    summary = _fit(tmp_path, "learn_cpu_async.yaml", steps)
    stats = summary["async"]
    assert stats["max_staleness"] == 2 and 0 <= stats["max_staleness_seen"] <= 2
    assert stats["dropped_groups"] == 0
    assert stats["trained_groups"] == stats["admitted_groups"] == steps * BATCH  # each group trained exactly once
    assert sum(stats["staleness_groups"].values()) == steps * BATCH
    assert max(int(k) for k in stats["staleness_tokens"]) <= 2
    assert 0.0 <= stats["trainer_idle_share"] <= 1.0 and 0.0 <= stats["server_idle_share"] <= 1.0
    events = list((tmp_path / "run").rglob("events.out.tfevents.*"))
    assert events and any(b"async/staleness_token_mean" in e.read_bytes() for e in events)  # TensorBoard


def test_max_staleness_zero_async_equals_sync(tmp_path):
    """Greedy rollouts (the same tokens in-process and on the server), REINFORCE++ on single samples: two steps
    synchronous and two steps on a rollout server with ``max_staleness: 0`` end with the same weights."""
    common = ["--model.rollout.do_sample=false", "--model.algorithm.estimator=reinforce_pp",
              "--model.algorithm.rollout_correction=none"]  # fmt: skip
    runs, weights = {}, []
    for name, extra in (("sync", []), ("async", ["--model.async_rollout.max_staleness=0"])):
        tmp = tmp_path / name
        tmp.mkdir()
        # n_samples 1: REINFORCE++ needs no group
        args = [*common, *extra, "--model.algorithm.n_samples=1", f"--model.algorithm.mini_batch_size={BATCH}"]
        config = "learn_cpu_async.yaml" if name == "async" else "learn_cpu.yaml"
        runs[name] = _start(tmp, config, 2, *args)  # both at once: one torch thread each, the same kernels
    try:
        for name, proc in runs.items():
            summary = _finish(proc, tmp_path / name)
            if name == "async":
                assert summary["async"]["max_staleness_seen"] == 0
                assert summary["async"]["trained_groups"] == 2 * BATCH
            weights.append(torch.load(summary["checkpoint"], map_location="cpu", weights_only=True)["state_dict"])
    finally:  # a failed run: the other one is not left running
        for proc in runs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        torch.testing.assert_close(weights[1][key], weights[0][key], atol=2e-5, rtol=1e-4, msg=key)


def test_a_killed_rollout_server_stops_fit_with_a_clear_message(tmp_path):
    proc = subprocess.Popen(_args(tmp_path, "learn_cpu_async.yaml", 50), cwd=tmp_path, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        log = tmp_path / "run" / "rollout_server_0.log"
        server = None
        deadline = time.monotonic() + 600
        while server is None and time.monotonic() < deadline and proc.poll() is None:
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
            pids = children.read_text().split() if children.exists() else []
            server = next((int(p) for p in pids if b"rollout.server" in Path(f"/proc/{p}/cmdline").read_bytes()), None)
            time.sleep(0.5)
        assert server is not None and log.exists(), "fit never started its rollout server"
        time.sleep(5)  # let it serve a while
        os.kill(server, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=180)  # a hang would fail here, not wait for ever
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "rollout server" in stderr and ("exited with code -9" in stderr or "stopped answering" in stderr)


def test_sigkill_and_resume_trains_every_prompt_once(tmp_path):
    """A checkpoint every step (holding the groups sampled ahead); SIGKILL after the second one; ``--ckpt_path``
    resumes with those groups restored: the prompts of the steps kept in the checkpoint plus those trained after the
    resume are every prompt of the run, each exactly once."""
    steps, run = 6, tmp_path / "run"
    extra = tmp_path / "extra.yaml"
    extra.write_text(f"""
trainer:
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {run}/ckpt, save_last: true, every_n_train_steps: 1, save_top_k: -1}}
    - class_path: searchr1.testing.step_clock.TrainedPrompts
      init_args: {{path: {run}/trained.jsonl}}
    - class_path: searchr1.training.run_report.RunSummary
      init_args: {{evaluate_before: false}}
""")  # fmt: skip
    args = [*_args(tmp_path, "learn_cpu_async.yaml", steps), "-c", str(extra)]
    proc = subprocess.Popen(args, cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while not list((run / "ckpt").glob("*step=2*.ckpt")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read()[-3000:] if proc.stderr else ""
        time.sleep(0.5)  # let the atomic write finish its rename
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    last = run / "ckpt" / "last.ckpt"
    kept = torch.load(last, map_location="cpu", weights_only=True)["searchr1"]
    assert kept["async"]["groups"], "the checkpoint holds no groups sampled ahead"
    before = [json.loads(line) for line in (run / "trained.jsonl").read_text().splitlines()]
    summary = _fit(tmp_path, "learn_cpu_async.yaml", steps, "-c", str(extra), f"--ckpt_path={last}")
    assert summary["async"]["restored_groups"] == len(kept["async"]["groups"])
    records = [json.loads(line) for line in (run / "trained.jsonl").read_text().splitlines()]
    done = kept["rollout_steps"]
    trained = [r for r in before if r["step"] < done] + records[len(before) :]
    assert sorted(r["step"] for r in trained) == list(range(steps))
    questions = [q for r in trained for q in r["questions"]]
    assert len(questions) == len(set(questions)) == steps * BATCH  # every prompt once, none repeated
