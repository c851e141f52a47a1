"""``tools/gpu_check.sh --smoke``: the GPU check's code (HF rollout, FSDP2 on one device, bf16-mixed PPO) on CPU."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_smoke_runs_fsdp2_bf16_mixed_with_fp32_masters():
    proc = subprocess.run(
        ["bash", str(ROOT / "tools" / "gpu_check.sh"), "--smoke"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["rollout_sampled_tokens"] > 0 and result["rollout_tokens_per_s"] > 0
    assert len(result["ppo_step_s"]) == result["ppo_steps"] == 2
    assert result["master_dtype"] == "torch.float32", "bf16-mixed keeps fp32 master weights"
    assert result["policy_weights_changed_share"] > 0.99, "lr 1e-6 steps move (almost) every fp32 master weight"
    assert result["async_server_tokens_per_s"] > 0 and result["async_dropped_groups"] == 0
    assert 0 <= result["async_max_staleness_seen"] <= 1
    # the small-GPU LoRA preset ran through searchr1 fit (one step on CPU)
    assert result["lora_preset"] == "grpo_qwen2.5-0.5b_lora_1gpu.yaml" and result["lora_preset_steps"] == 1
