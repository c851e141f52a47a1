"""LoRA on 2 CPU ranks (gloo) under DDP and FSDP2 through ``searchr1 fit``: the adapters train, the ranks agree, and
the export (merged HF folder + adapter) and the adapter-only checkpoint are written."""

from __future__ import annotations

import csv

import pytest
import torch
from safetensors.torch import load_file

from .test_multirank import ROOT, SEARCHR1, _assert_finished, _csv_overlay, _metrics, _ok, _run

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_lora_on_two_ranks(tmp_path, strategy):
    run = tmp_path / "run"
    args = [SEARCHR1, "fit", "-c", str(ROOT / "configs" / "tiny_cpu.yaml"), "-c", str(_csv_overlay(run, 1))]
    args += ["--trainer.devices=2", f"--trainer.strategy={strategy}", "--model.lora.r=4", "--model.policy_lr=1e-2"]
    args += ["--trainer.limit_val_batches=0", "--data.batch_size=2", "--model.algorithm.mini_batch_size=8"]
    args += ["--model.algorithm.entropy_coef=0.01"]  # a gradient even when every reward is 0
    _ok(_run(args, cwd=tmp_path, timeout=900))
    _assert_finished(run, _metrics(run), 1)
    adapter = load_file(run / "hf" / "last" / "adapter" / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b), "every adapter's B moved from its zero init"
    merged = load_file(run / "hf" / "last" / "model.safetensors")
    assert not any("lora" in k or "base_layer" in k for k in merged)  # plain names: loads with AutoModelForCausalLM
    assert merged["model.layers.0.self_attn.q_proj.weight"].shape == (64, 64)
    (last,) = run.glob("csv/version_*/checkpoints/last.ckpt")
    if strategy == "ddp":  # one file; FSDP2 writes a distributed checkpoint folder
        state = torch.load(last, weights_only=True)["state_dict"]
        assert state and all(".lora_" in k for k in state)


def test_lora_fsdp2_distributed_checkpoint_resumes(tmp_path):
    """A LoRA run under FSDP2 resumes from its distributed checkpoint (which keeps the frozen base shards: Lightning
    loads every key of the module from such a folder)."""
    run = tmp_path / "run"
    base = [SEARCHR1, "fit", "-c", str(ROOT / "configs" / "tiny_cpu.yaml"), "--trainer.devices=2"]
    base += ["--trainer.strategy=fsdp2", "--model.lora.r=4", "--trainer.limit_val_batches=0", "--data.batch_size=2"]
    base += ["--model.algorithm.mini_batch_size=8", f"--trainer.default_root_dir={run}"]
    base += [f"--trainer.logger.init_args.save_dir={run}"]
    _ok(_run([*base, "-c", str(_csv_overlay(run, 1))], cwd=tmp_path, timeout=900))
    (last,) = run.glob("csv/version_0/checkpoints/last.ckpt")
    assert last.is_dir()
    resume = [f"--ckpt_path={last}", "--trainer.max_epochs=2"]  # the checkpoint ends epoch 0: train one more
    _ok(_run([*base, "-c", str(_csv_overlay(run, 1)), *resume], cwd=tmp_path, timeout=900))
    with open(run / "csv" / "version_1" / "metrics.csv") as fh:  # the resumed run: one new rollout step
        steps = [r for r in csv.DictReader(fh) if r.get("train/reward")]
    assert len(steps) == 1
