"""What users run on several ranks, for real on 2 CPU processes (gloo): the CLI under Lightning's launcher and under
torchrun, the FSDP2 config, lockstep with uneven work, equivalence with DDP and one process, resume, NaN stops,
the GPU precision setting, and 2 nodes through torchrun and SLURM variables.

Every run is a subprocess with a timeout; the worker scripts set a 20 s process-group timeout, so a broken lockstep
invariant fails in seconds (``test_without_lockstep_uneven_work_fails_fast`` shows that it does).
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SEARCHR1 = str(Path(sys.executable).with_name("searchr1"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

pytestmark = pytest.mark.slow


def _run(cmd: list[str], timeout: int = 300, cwd: Path | None = None, env: dict | None = None):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env or ENV, cwd=cwd)


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-6000:])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _csv_overlay(run: Path, steps: int) -> Path:
    """Keeps the config's callbacks; logs to CSV under ``run`` so the test can read the metrics."""
    path = run.parent / f"{run.name}-overlay.yaml"
    path.write_text(
        f"""
trainer:
  default_root_dir: {run}
  limit_train_batches: {steps}
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args: {{save_dir: {run}, name: csv}}
"""
    )
    return path


def _metrics(run: Path) -> list[dict[str, str]]:
    rows = []
    for f in sorted(run.glob("csv/version_*/metrics.csv")):
        with open(f) as fh:
            rows += list(csv.DictReader(fh))
    return rows


def _column(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key) not in (None, "")]


def _assert_finished(run: Path, rows: list[dict[str, str]], steps: int) -> None:
    assert len(_column(rows, "train/reward")) == steps, "every rollout step logged"
    assert (run / "hf" / "last" / "model.safetensors").exists(), "HF export written"
    assert list(run.glob("csv/version_*/checkpoints/last.ckpt")), "checkpoint written"
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(run / "hf" / "last")
    assert type(model).__name__ == "Qwen2ForCausalLM"


# ------------------------------------------------------------------------------------------ the CLI, as users run it
@pytest.mark.parametrize(("launcher", "strategy"), [("lightning", "ddp"), ("torchrun", "ddp"), ("lightning", "fsdp2")])
def test_embedded_default_with_every_shipped_callback_on_two_ranks(tmp_path, launcher, strategy):
    """``searchr1 fit`` (the embedded default, every callback it ships with) on 2 ranks, shortened: 2 steps, 12
    held-out questions; the run summary counts every held-out question once over both ranks."""
    from searchr1.cli import default_config_path

    run = tmp_path / "run"
    heldout = tmp_path / "heldout.jsonl"
    rows = (ROOT / "searchr1/assets/synthetic_task/heldout.jsonl").read_text().splitlines(keepends=True)
    heldout.write_text("".join(rows[:12]))
    args = ["fit", "-c", default_config_path(), "-c", str(_csv_overlay(run, 2))]
    args += ["--trainer.devices=2", f"--trainer.strategy={strategy}", "--trainer.val_check_interval=2"]
    args += [f"--data.val_files=[{heldout}]", "--data.val_batch_size=6", "--data.batch_size=4"]
    args += ["--model.algorithm.mini_batch_size=16"]
    if launcher == "lightning":  # Lightning's launcher re-runs sys.argv for rank 1
        cmd = [SEARCHR1, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", SEARCHR1, *args]
    _ok(_run(cmd, cwd=tmp_path, timeout=900))
    rows = _metrics(run)
    _assert_finished(run, rows, 2)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["questions"] == 12 and summary["steps"] == 2


UNEVEN = {
    # padded lengths are ~350-370 tokens: a 720-token budget holds 2 rows on one rank and 1 on the other at some step
    "micro_batches": (["--model.algorithm.micro_token_budget=720"], "train/lockstep_added_micro_batches"),
    # prompts are 139-170 tokens: a 175-token cap gives each row its own room (5-32 tokens), so a rank whose
    # prompts are all long finishes decoding before the other and keeps stepping with dummy forwards
    "decode": (
        ["--model.rollout.max_total_tokens=175", "--model.rollout.max_prompt_tokens=170"],
        "rollout/lockstep_idle_forwards",
    ),
}


@pytest.mark.parametrize("uneven", sorted(UNEVEN))
def test_fsdp2_config_with_uneven_micro_batches_and_rollouts(tmp_path, uneven):
    """``configs/tiny_cpu_fsdp2.yaml`` with settings that give the ranks different micro-batch counts, or sampled
    rollouts that end at different decode steps: it runs to the end, and the lockstep padding really happened."""
    run = tmp_path / "run"
    args, metric = UNEVEN[uneven]
    config = ROOT / "configs" / "tiny_cpu_fsdp2.yaml"
    timeout = "--trainer.strategy.init_args.timeout_seconds=120"  # a broken lockstep fails, not hangs for 30 min
    _ok(_run([SEARCHR1, "fit", "-c", str(config), "-c", str(_csv_overlay(run, 3)), timeout, *args], cwd=tmp_path))
    rows = _metrics(run)
    _assert_finished(run, rows, 3)
    assert max(_column(rows, metric)) > 0, f"{metric}: the ranks did uneven work"


# ------------------------------------------------------------------------------------- lockstep, without Lightning
def _lockstep(model_dir: str, out: Path, mode: str = "check") -> subprocess.CompletedProcess:
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return _run([*run, str(HERE / "lockstep_worker.py"), model_dir, str(out), mode], timeout=180)


def test_fsdp2_lockstep_with_uneven_work_equals_ddp_and_one_process(tmp_path, tiny_model_dir):
    _ok(_lockstep(tiny_model_dir, tmp_path))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r in ranks:
        # rank 0 decodes 2 tokens, rank 1 twelve: rank 0 keeps stepping (dummy forwards) and both give plain tokens
        assert r["tokens_per_forward_gather"] == r["tokens_unsharded"] == r["expected_tokens"]
        assert r["logprob_max_diff"] < 1e-5
        # same global batch of 8 rows: FSDP2 (4 rows per rank, 2 vs 4 micro-batches), DDP, one process; SGD step
        # moves weights by up to ~7e-4, the three agree to float32 rounding
        assert r["moved"] > 1e-4
        assert r["fsdp_vs_single"] < 1e-6 and r["ddp_vs_single"] < 1e-6
        # clipping uses the global norm (equal on every rank and to the one-process norm)
        assert r["grad_norm"]["fsdp"] == pytest.approx(r["grad_norm"]["single"], rel=1e-5)
        assert r["grad_norm"]["ddp"] == pytest.approx(r["grad_norm"]["single"], rel=1e-5)
        # lr 1e-6 AdamW: fp32 masters with bf16 compute move (almost) every weight; pure bf16 weights mostly do not
        assert r["mixed_changed"] > 0.99
        assert r["pure_bf16_changed"] < 0.2
    assert ranks[0]["grad_norm"] == ranks[1]["grad_norm"]


def test_without_lockstep_uneven_work_fails_fast(tmp_path, tiny_model_dir):
    """The negative control: the same uneven micro-batch counts with no agreement hang until the 20 s timeout."""
    start = time.monotonic()
    proc = _lockstep(tiny_model_dir, tmp_path, "no_lockstep")
    assert proc.returncode != 0
    assert "Timed out" in proc.stderr or "Connection closed by peer" in proc.stderr, proc.stderr[-3000:]
    assert time.monotonic() - start < 120


# ----------------------------------------------------------------------------------- Lightning runs, worker script
def _worker(model: str, out: Path, *extra: str, env: dict | None = None, prefix: list[str] | None = None):
    cmd = [*(prefix or [sys.executable]), str(HERE / "ddp_worker.py"), "--model", model, "--out", str(out), *extra]
    return _run(cmd, env=env)


def _weights(out: Path, rank: int) -> dict[str, torch.Tensor]:
    return torch.load(out / f"rank{rank}.pt")


def test_fsdp2_ppo_resume_equals_the_uninterrupted_run(tmp_path, tiny_model_dir):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    args = ["--strategy", "fsdp2", "--algo", "ppo", "--steps", "3"]
    _ok(_worker(tiny_model_dir, full, *args, "--ckpt_every", "1"))
    checkpoints = sorted((full / "ckpt").glob("step=*.ckpt"), key=lambda p: int(p.stem.split("=")[1]))
    assert len(checkpoints) == 3 and all(p.is_dir() for p in checkpoints), "one distributed checkpoint per step"
    _ok(_worker(tiny_model_dir, resumed, *args, "--resume", str(checkpoints[1])))  # after rollout step 2
    for rank in (0, 1):
        before = json.loads((full / f"rank{rank}.json").read_text())["steps"]
        (step,) = json.loads((resumed / f"rank{rank}.json").read_text())["steps"]
        assert step["ids"] == before[2]["ids"] and step["responses"] == before[2]["responses"]
        assert step["param_sums"] == before[2]["param_sums"]
        a, b = _weights(full, rank), _weights(resumed, rank)
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert before[0]["ids"] != json.loads((full / "rank0.json").read_text())["steps"][1]["ids"]


@pytest.mark.parametrize("strategy", ["fsdp2", "ddp"])
def test_nan_on_rank_1_stops_both_ranks_with_the_same_message(tmp_path, tiny_model_dir, strategy):
    proc = _worker(tiny_model_dir, tmp_path, "--strategy", strategy, "--steps", "3", "--nan_rank", "1")
    assert proc.returncode != 0
    errors = [json.loads((tmp_path / f"rank{r}.err").read_text()) for r in (0, 1)]
    assert errors[0]["message"] == errors[1]["message"]
    assert errors[0]["message"].startswith("rank 1: reward nan_on_rank returned nan at rollout step 1")
    assert abs(errors[0]["time"] - errors[1]["time"]) < 5, "both stop at once, not after a process-group timeout"


def _two_nodes(out: Path, tiny_model_dir: str, launch: list[str], envs: list[dict], *extra: str) -> list[int]:
    """Start one ``ddp_worker.py`` "node" per env (``num_nodes=2``, one rank each) and wait for both."""
    worker = [str(HERE / "ddp_worker.py"), "--model", tiny_model_dir, "--out", str(out), "--steps", "1"]
    worker += ["--devices", "1", "--num_nodes", "2", *extra]
    procs = [
        subprocess.Popen(
            [*launch(node), *worker], env={**ENV, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for node, env in enumerate(envs)
    ]
    for p in procs:
        p.communicate(timeout=300)
    return [p.returncode for p in procs]


def test_two_nodes_through_torchrun_and_slurm_variables(tmp_path, tiny_model_dir):
    """2 nodes x 1 rank on localhost (``num_nodes=2``): the docs/scaling.md recipes, FSDP2 under torchrun."""
    port = _free_port()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1"]
    torchrun += ["--master_addr", "127.0.0.1", "--master_port", str(port)]
    codes = {
        "torchrun": _two_nodes(
            tmp_path / "torchrun",
            tiny_model_dir,
            lambda node: [*torchrun, "--node_rank", str(node)],
            [{}, {}],
            "--strategy",
            "fsdp2",
        ),  # fmt: skip
    }
    slurm = {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "2", "SLURM_JOB_NAME": "searchr1"}
    slurm |= {"SLURM_JOB_ID": "4242", "SLURM_NODELIST": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    envs = [{**slurm, "SLURM_PROCID": str(r), "SLURM_LOCALID": "0", "SLURM_NODEID": str(r)} for r in (0, 1)]
    codes["slurm"] = _two_nodes(tmp_path / "slurm", tiny_model_dir, lambda node: [sys.executable], envs)
    for name, node_codes in codes.items():
        out = tmp_path / name
        assert node_codes == [0, 0], name
        ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
        assert [r["world_size"] for r in ranks] == [2, 2], name
        assert ranks[0]["steps"][0]["ids"] != ranks[1]["steps"][0]["ids"], f"{name}: each node its own prompts"
        assert ranks[0]["steps"][0]["param_sums"] == ranks[1]["steps"][0]["param_sums"], name
        a, b = _weights(out, 0), _weights(out, 1)
        assert all(torch.equal(a[k], b[k]) for k in a), f"{name}: identical parameters on both nodes"
