"""LoRA through the training module: a GRPO step moves only the adapters, and a LoRA checkpoint resumes exactly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from searchr1.data.datamodule import QADataModule
from searchr1.models import LoRAConfig
from searchr1.models.lora import AdaptersOff
from searchr1.rollout import RolloutConfig
from searchr1.training import AlgorithmConfig, SearchR1Module

from .conftest import DATA
from .test_e2e import GRPO, CrashAt, Recorder, trainer

ROOT = Path(__file__).resolve().parents[2]


def make_lora(model_dir, bm25, seed=0):
    module = SearchR1Module(
        model_name_or_path=model_dir,
        retriever=bm25,
        rollout=RolloutConfig(
            max_turns=2, max_response_tokens=16, max_obs_tokens=32, max_total_tokens=512, max_prompt_tokens=400, topk=1
        ),
        algorithm=AlgorithmConfig(**GRPO, entropy_coef=0.01),  # a gradient even when every reward is 0
        lora=LoRAConfig(r=4, alpha=8),
        policy_lr=1e-2,
        seed=seed,
    )
    data = QADataModule(train_files=[str(DATA / "questions.jsonl")], batch_size=2, seed=seed)
    return module, data


def test_lora_grpo_step_changes_only_adapter_weights(tmp_path, tiny_model_dir, bm25):
    module, data = make_lora(tiny_model_dir, bm25)
    module.configure_model()
    assert isinstance(module.reference, AdaptersOff) and module.reference.policy is module.policy
    before = {n: p.detach().clone() for n, p in module.policy.named_parameters()}
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer(tmp_path, 1, [ckpt]).fit(module, data)
    changed = {n for n, p in module.policy.named_parameters() if not torch.equal(before[n], p)}
    adapters = {n for n in before if ".lora_" in n}
    assert changed <= adapters, sorted(changed - adapters)[:3]
    assert {n for n in changed if ".lora_B." in n} == {n for n in adapters if ".lora_B." in n}
    # the checkpoint holds the adapters and their optimizer state only
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert set(state["state_dict"]) == {f"policy.{n}" for n in adapters}
    assert len(state["optimizer_states"][0]["state"]) == len(adapters)
    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear", "seed": 0}
    assert state["hyper_parameters"]["lora"] == lora
    # evaluation loads such a checkpoint: base from model_name_or_path + the adapters, merged for generation
    from searchr1.evaluation.loading import load_policy

    loaded = load_policy(str(tmp_path / "ckpt" / "last.ckpt"), device="cpu")
    assert type(loaded.model).__name__ == "Qwen2ForCausalLM"
    ids = torch.randint(5, 200, (2, 12))
    with torch.no_grad():
        expected = module.policy.eval()(input_ids=ids).logits
        torch.testing.assert_close(loaded.model(input_ids=ids).logits, expected, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_lora_checkpoint_resume_is_exact(tmp_path, tiny_model_dir, bm25):
    torch.use_deterministic_algorithms(True)
    try:
        module_a, data_a = make_lora(tiny_model_dir, bm25)
        trainer(tmp_path / "a", 2, [Recorder()]).fit(module_a, data_a)
        module_b, data_b = make_lora(tiny_model_dir, bm25)
        ckpt = ModelCheckpoint(dirpath=tmp_path / "b", save_last=True, every_n_train_steps=1)
        with pytest.raises(RuntimeError, match="simulated crash"):
            trainer(tmp_path / "b", 2, [ckpt, CrashAt(1)]).fit(module_b, data_b)
        module_c, data_c = make_lora(tiny_model_dir, bm25)
        rec_c = Recorder()
        trainer(tmp_path / "c", 2, [rec_c]).fit(module_c, data_c, ckpt_path=str(tmp_path / "b" / "last.ckpt"))
    finally:
        torch.use_deterministic_algorithms(False)
    assert len(rec_c.steps) == 1
    for (name, pa), pc in zip(module_a.policy.named_parameters(), module_c.policy.parameters()):
        assert torch.equal(pa, pc), (name, (pa - pc).abs().max().item())
    opt_a, opt_c = module_a.optimizers().optimizer.state_dict(), module_c.optimizers().optimizer.state_dict()
    for key, state in opt_a["state"].items():
        assert torch.equal(state["exp_avg_sq"], opt_c["state"][key]["exp_avg_sq"]), key


@pytest.mark.slow
def test_lora_on_the_tiny_config_through_the_console_script(tmp_path):
    """``searchr1 fit -c configs/tiny_cpu.yaml --model.lora.r=4`` (the acceptance command), shortened to 1 step."""
    searchr1 = str(Path(sys.executable).with_name("searchr1"))
    run = tmp_path / "run"
    cmd = [searchr1, "fit", "-c", str(ROOT / "configs" / "tiny_cpu.yaml"), "--model.lora.r=4"]
    cmd += ["--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1", "--data.max_val_samples=4"]
    cmd += [f"--trainer.default_root_dir={run}", f"--trainer.logger.init_args.save_dir={run}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "PeftModelForCausalLM" in proc.stdout + proc.stderr  # the model summary names the adapted policy
    assert (run / "hf" / "last" / "config.json").is_file() and (run / "hf" / "last" / "adapter").is_dir()
