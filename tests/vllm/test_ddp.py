"""Two DDP ranks on CPU, each with its own colocated vLLM engine (``tests/vllm/ddp_vllm_worker.py`` under torchrun):
after every step each engine decodes as its rank's live policy does, and validating the trained checkpoint through
vLLM gives the same trajectories and EM as through the HF backend."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm")
pytestmark = [pytest.mark.vllm, pytest.mark.slow]

HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_each_engine_follows_its_policy_and_validation_matches_hf(vllm_model_dir, tmp_path):
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
        str(HERE / "ddp_vllm_worker.py"), "--model", str(vllm_model_dir), "--out", str(out), "--steps", "2",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(HERE.parents[1])}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank in ranks:
        assert [s["pushes"] for s in rank["steps"]] == [2, 3]  # before the first rollout, then after each update
        for step in rank["steps"]:
            assert step["engine"] == step["policy"]  # greedy ids of the engine = the rank's live policy
            # log-probs: the engine has the updated weights, not the starting ones (negative control)
            assert step["logprob_gap_policy"] < 1e-4 < step["logprob_gap_start"]
        vllm, hf = rank["vllm"], rank["hf"]
        assert vllm["responses"] == hf["responses"] and len(vllm["responses"]) == 2
        assert vllm["metrics"]["val/em"] == hf["metrics"]["val/em"]
    assert ranks[0]["vllm"]["metrics"] == ranks[1]["vllm"]["metrics"]  # reduced over the ranks
