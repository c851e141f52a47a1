"""Real multi-process runs on CPU (gloo): Lightning DDP training on 2 ranks (FSDP2 and the CLI: test_multirank.py).

Each test launches a worker script in a subprocess (Lightning's ``ddp`` launcher re-runs its script per rank,
which pytest cannot host) and compares the per-rank files it writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent


def _run(args: list[str], timeout: int = 240) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]


def _ddp(model: str, out: Path, *extra: str) -> list[dict]:
    _run([sys.executable, str(HERE / "ddp_worker.py"), "--model", model, "--out", str(out), *extra])
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.slow
def test_ddp_two_ranks_shard_data_sync_gradients_and_resume(tmp_path, tiny_model_dir):
    full = _ddp(tiny_model_dir, tmp_path / "full", "--steps", "3", "--ckpt_every", "1")
    assert [r["world_size"] for r in full] == [2, 2]
    for s0, s1 in zip(full[0]["steps"], full[1]["steps"]):
        assert not set(s0["ids"]) & set(s1["ids"]), "each rank rolls out its own prompts"
        assert s0["responses"] != s1["responses"]
        # different data per rank, yet every policy tensor is the same after each step: grads all-reduced
        assert s0["param_sums"] == s1["param_sums"]
    first, last = full[0]["steps"][0]["param_sums"], full[0]["steps"][-1]["param_sums"]
    assert sum(first[k] != last[k] for k in first) > len(first) // 3, "training must change the policy"
    w0, w1 = (torch.load(tmp_path / "full" / f"rank{r}.pt") for r in (0, 1))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    # resume on 2 ranks from the checkpoint written after step 2: step 3 reproduces the uninterrupted run
    ckpt = tmp_path / "full" / "ckpt" / "step=2.ckpt"
    resumed = _ddp(tiny_model_dir, tmp_path / "resumed", "--steps", "3", "--resume", str(ckpt))
    for rank in (0, 1):
        (step,) = resumed[rank]["steps"]
        assert step["ids"] == full[rank]["steps"][2]["ids"]
        assert step["responses"] == full[rank]["steps"][2]["responses"]
        w = torch.load(tmp_path / "resumed" / f"rank{rank}.pt")
        assert all(torch.allclose(w[k], w0[k], atol=1e-6) for k in w0)


@pytest.mark.slow
def test_ddp_ppo_critic_and_micro_batches_stay_in_sync(tmp_path, tiny_model_dir):
    """Critic and policy backward passes in one step, several mini/micro-batches: DDP's reducer alone fails here."""
    ranks = _ddp(tiny_model_dir, tmp_path, "--steps", "2", "--algo", "ppo")
    for s0, s1 in zip(ranks[0]["steps"], ranks[1]["steps"]):
        assert s0["ids"] != s1["ids"]
        assert any(k.startswith("critic.") for k in s0["param_sums"])
        assert s0["param_sums"] == s1["param_sums"]


def _gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.gpu
@pytest.mark.skipif(_gpus() < 2, reason="needs 2 CUDA GPUs")
@pytest.mark.parametrize(
    ("strategy", "algo"),
    [("fsdp2", "grpo"), ("fsdp2", "ppo"), ("deepspeed_stage_2", "grpo"), ("deepspeed_stage_3", "grpo")],
)
def test_sharded_strategies_on_gpus_keep_ranks_in_sync(tmp_path, tiny_model_dir, strategy, algo):
    """FSDP2 / DeepSpeed with the module's own sharding, bf16-mixed, generation with gathered params."""
    if strategy.startswith("deepspeed"):
        pytest.importorskip("deepspeed")
    args = ["--accelerator", "gpu", "--strategy", strategy, "--precision", "bf16-mixed", "--algo", algo]
    ranks = _ddp(tiny_model_dir, tmp_path, "--steps", "2", *args)
    for s0, s1 in zip(ranks[0]["steps"], ranks[1]["steps"]):
        assert s0["ids"] != s1["ids"]
        assert s0["param_sums"] == pytest.approx(s1["param_sums"], rel=1e-6)
    first, last = ranks[0]["steps"][0]["param_sums"], ranks[0]["steps"][-1]["param_sums"]
    assert any(first[k] != last[k] for k in first)
