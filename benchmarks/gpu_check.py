"""The GPU path in one short run: CUDA HF rollout tokens/s and PPO steps of a ~0.4B random Qwen2, bf16-mixed, FSDP2.

Builds a random Qwen2 with Qwen2.5-0.5B's layer shapes (24 layers, hidden 896, 14/2 heads, MLP 4864) and a
tokenizer trained on the fly (vocabulary 2048, so ~0.36B parameters), offline. Then:

1. rollout: the HF backend's decode loop on the GPU (``RolloutEngine`` with in-process BM25 over the shipped
   HotpotQA sample), sampled, ``--rollout-prompts`` prompts x 2 turns; reports generated tokens/s;
2. training: ``searchr1 fit``'s module and data module under ``Trainer(strategy=FSDP2Strategy(), devices=1,
   precision="bf16-mixed")`` for ``--steps`` PPO steps (policy + critic + reference); reports seconds per step,
   peak GPU memory, and that the fp32 master weights moved;
3. async: a rollout server process on the GPU driven by the asynchronous driver for 3 batches with
   ``max_staleness`` 1 and a weight push after each — vLLM's own server with our worker extension where vLLM is
   installed (weights through a NCCL group from GPU 0 to a server on GPU 1 with 2+ GPUs, else a safetensors file),
   else ours (``searchr1.rollout.server --device cuda --dtype bfloat16``); reports its tokens/s, the push time,
   the staleness seen and the dropped groups (must be 0);
4. the small-GPU preset: ``configs/grpo_qwen2.5-0.5b_lora_1gpu.yaml`` (LoRA, bf16-mixed, gradient checkpointing)
   through ``searchr1 fit`` for ``--preset-steps`` rollout steps on the same random model (offline data/retriever).

Prints one JSON line. ``tools/gpu_check.sh`` runs it (< 8 minutes on one H100/H200); ``--smoke`` runs the same
code on CPU with a tiny model (what CI checks, so the script does not rot).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

# rollout/training sizes: (prompts per PPO step, response tokens per turn)
SIZES = {"qwen2.5-0.5b": (16, 128), "smoke": (2, 16)}
SHAPES = {
    "qwen2.5-0.5b": dict(hidden_size=896, num_layers=24, num_heads=14, num_kv_heads=2, intermediate_size=4864),
    "smoke": dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128),
}


def rollout_config(response_tokens: int):
    from searchr1.rollout import RolloutConfig

    return RolloutConfig(
        max_turns=2, max_response_tokens=response_tokens, max_obs_tokens=256, max_total_tokens=2048,
        max_prompt_tokens=1024, topk=3,
    )  # fmt: skip


def rollout_tokens_per_s(model_dir: str, device: str, prompts: int, response_tokens: int) -> dict:
    from searchr1.data.qa import read_examples
    from searchr1.models import load_causal_lm, load_tokenizer
    from searchr1.protocols import build_prompt
    from searchr1.resources import package_path
    from searchr1.retrieval import BM25Retriever
    from searchr1.rollout import RolloutEngine
    from searchr1.rollout.backends.hf import HFBackend

    tokenizer = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir, torch.bfloat16 if device == "cuda" else None).to(device).eval()
    retriever = BM25Retriever(corpus=package_path("pkg:assets/hotpotqa_dev_sample/corpus.jsonl"))
    config = rollout_config(response_tokens)
    engine = RolloutEngine(HFBackend(model, tokenizer, batch_size=prompts), retriever, tokenizer, config)
    questions = read_examples(package_path("pkg:assets/hotpotqa_dev_sample/questions.jsonl"))[:prompts]
    texts = [build_prompt(q.question, tokenizer, True) for q in questions]
    engine.generate(texts[:2], n=1, seed=0)  # warm-up (kernels, allocator)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    batch = engine.generate(texts, n=1, seed=1)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    sampled = int(batch.loss_mask.sum())
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "rollout_prompts": len(texts),
        "rollout_sampled_tokens": sampled,
        "rollout_s": seconds,
        "rollout_tokens_per_s": sampled / seconds,
    }


def ppo_steps(model_dir: str, accelerator: str, steps: int, root: Path, prompts: int, response_tokens: int) -> dict:
    from lightning.pytorch import Callback, Trainer

    from searchr1.data.datamodule import QADataModule
    from searchr1.resources import package_path
    from searchr1.retrieval import BM25Retriever
    from searchr1.training import AlgorithmConfig, SearchR1Module
    from searchr1.training.scaling import iter_full_params
    from searchr1.training.strategies import FSDP2Strategy

    class StepTimer(Callback):
        def __init__(self) -> None:
            self.times, self.first = [], None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if self.first is None:
                self.first = {n: t.float().clone() for n, t in iter_full_params(pl_module.policy)}
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if accelerator == "gpu":
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.start)

    module = SearchR1Module(
        model_name_or_path=model_dir,
        retriever=BM25Retriever(corpus=package_path("pkg:assets/hotpotqa_dev_sample/corpus.jsonl")),
        rollout=rollout_config(response_tokens),
        algorithm=AlgorithmConfig(
            estimator="gae", n_samples=1, kl_coef=0.001, kl_in_reward=True, mini_batch_size=max(1, prompts // 2)
        ),
        policy_lr=1e-6,
        critic_lr=1e-5,
        gradient_checkpointing=accelerator == "gpu",
    )
    questions = package_path("pkg:assets/hotpotqa_dev_sample/questions.jsonl")
    data = QADataModule(train_files=[questions], batch_size=prompts, seed=0)
    timer = StepTimer()
    trainer = Trainer(
        accelerator=accelerator, devices=1, strategy=FSDP2Strategy(), precision="bf16-mixed", max_epochs=1,
        limit_train_batches=steps, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, default_root_dir=root, callbacks=[timer],
    )  # fmt: skip
    if accelerator == "gpu":
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, data)
    last = {n: t.float() for n, t in iter_full_params(module.policy)}
    moved = sum(int((last[n] != timer.first[n]).sum()) for n in last) / sum(t.numel() for t in last.values())
    out = {"ppo_steps": steps, "ppo_step_s": timer.times, "policy_weights_changed_share": moved,
           "master_dtype": str(next(module.policy.parameters()).dtype)}  # fmt: skip
    if accelerator == "gpu":
        out["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def async_check(model_dir: str, device: str, prompts: int, response_tokens: int, root: Path) -> dict:
    """Three batches on a rollout server process with a weight push after each (docs/async.md)."""
    from searchr1.data.qa import read_examples
    from searchr1.models import load_causal_lm, load_tokenizer
    from searchr1.protocols import build_prompt
    from searchr1.resources import package_path
    from searchr1.retrieval import BM25Retriever
    from searchr1.rollout import RolloutEngine
    from searchr1.rollout.async_driver import AsyncRolloutDriver
    from searchr1.rollout.backends.hf import HFBackend

    tokenizer, policy = load_tokenizer(model_dir), load_causal_lm(model_dir)
    retriever = BM25Retriever(corpus=package_path("pkg:assets/hotpotqa_dev_sample/corpus.jsonl"))
    engine = RolloutEngine(HFBackend(policy, tokenizer), retriever, tokenizer, rollout_config(response_tokens))
    questions = read_examples(package_path("pkg:assets/hotpotqa_dev_sample/questions.jsonl"))
    procs, servers, push = _async_servers(model_dir, device, root)

    def batch(k: int) -> list:
        chosen = questions[k * prompts : (k + 1) * prompts]
        return [(q, build_prompt(q.question, tokenizer, True)) for q in chosen]

    driver = AsyncRolloutDriver(engine, servers, batch, n=2, total_batches=3, max_staleness=1, seed=0)
    pushes, start = [], time.perf_counter()
    try:
        for step in range(3):
            driver.record_trained(driver.take(step), step)
            with torch.no_grad():
                for p in policy.parameters():
                    p.add_(1e-3)
            pushes.append(push(policy, step + 1))
            driver.set_version(step + 1)
        wall = time.perf_counter() - start
        tokens = servers.counters()[0]["searchr1_rollout_tokens_total"]
    finally:
        dropped = driver.close()
        procs.close()
    return {
        "async_server": type(servers).__name__,
        "async_server_tokens_per_s": round(tokens / wall, 1),
        "async_push_seconds": round(max(pushes), 3),
        "async_max_staleness_seen": max(driver.stats.token_staleness, default=0),
        "async_dropped_groups": dropped,
    }


def _async_servers(model_dir: str, device: str, root: Path):
    """``(processes, client, push(policy, version) -> seconds)``: vLLM on CUDA where installed, else ours."""
    import importlib.util
    import sys

    from searchr1.rollout.remote import RemoteServers, ServerProcesses

    if device == "cuda" and importlib.util.find_spec("vllm") is not None:
        from searchr1.rollout.backends.vllm_transfer import GroupWeightSender
        from searchr1.rollout.backends.vllm_weights import save_unshared
        from searchr1.rollout.vllm_servers import VLLMRemoteServers, VLLMServerProcesses, free_port

        two = torch.cuda.device_count() >= 2  # NCCL refuses two ranks on one GPU: one GPU pushes files
        args = ["--dtype", "bfloat16", "--gpu-memory-utilization", "0.3", "--max-model-len", "4096"]
        procs = VLLMServerProcesses(1, model_dir, root, sys.executable, args, devices=["1"] if two else None)
        servers = VLLMRemoteServers(procs.urls)
        if two:
            sender = GroupWeightSender("nccl", "127.0.0.1", free_port(), sum(servers.worker_counts()),
                                       torch.device("cuda:0"))  # fmt: skip
            servers.join_group(sender)
            return procs, servers, lambda policy, v: servers.push_group(sender, policy.named_parameters(), v)

        def push_file(policy, version: int) -> float:
            save_unshared(list(policy.state_dict().items()), str(root / "policy.safetensors"))
            return servers.push_weights(str(root / "policy.safetensors"), version)

        return procs, servers, push_file
    dtype = ["--device", device] + (["--dtype", "bfloat16"] if device == "cuda" else [])
    procs = ServerProcesses(1, model_dir, root, threads=1, batch_size=256, extra_args=dtype)
    servers = RemoteServers(procs.urls)

    def push_torch(policy, version: int) -> float:
        torch.save(policy.state_dict(), root / "policy.pt")
        return servers.push_weights(str(root / "policy.pt"), version)

    return procs, servers, push_torch


PRESET = Path(__file__).resolve().parents[1] / "configs" / "grpo_qwen2.5-0.5b_lora_1gpu.yaml"


def preset_steps(model_dir: str, accelerator: str, steps: int, root: Path) -> dict:
    """``searchr1 fit -c configs/grpo_qwen2.5-0.5b_lora_1gpu.yaml`` for ``steps`` rollout steps, offline: the random
    0.5B-shaped model, in-process BM25 over the shipped HotpotQA sample, vLLM when installed (else the HF backend)."""
    import importlib.util
    import subprocess
    import sys

    pkg = "pkg:assets/hotpotqa_dev_sample"
    args = [str(Path(sys.executable).with_name("searchr1")), "fit", "-c", str(PRESET)]
    args += [f"--model.model_name_or_path={model_dir}", f"--trainer.limit_train_batches={steps}"]
    args += ["--trainer.limit_val_batches=0", f"--trainer.default_root_dir={root}", "--trainer.logger=false"]
    args += [f'--model.retriever={{"class_path": "searchr1.retrieval.BM25Retriever", "init_args": '
             f'{{"corpus": "{pkg}/corpus.jsonl"}}}}']  # fmt: skip
    args += [f"--data.train_files=[{pkg}/questions.jsonl]", f"--data.val_files=[{pkg}/questions.jsonl]"]
    args += ["--model.rollout.max_response_tokens=128", "--model.rollout.max_obs_tokens=256"]
    if importlib.util.find_spec("vllm") is None:
        args += ["--model.backend=hf", "--model.backend_kwargs={}"]
    if accelerator == "cpu":
        args += ["--trainer.accelerator=cpu", "--trainer.precision=32-true", "--data.batch_size=2"]
        args += ["--model.algorithm.mini_batch_size=10", "--model.rollout.max_response_tokens=16"]
    t0 = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"gpu_check: the LoRA preset failed:\n{proc.stderr[-4000:]}")
    return {"lora_preset": PRESET.name, "lora_preset_steps": steps, "lora_preset_s": time.perf_counter() - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model on CPU (checks the script itself)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rollout-prompts", type=int, default=32)
    parser.add_argument("--preset-steps", type=int, default=3, help="steps of the 0.5B LoRA 1-GPU preset (0: skip)")
    args = parser.parse_args()
    from searchr1.models.tiny import build_tiny_qwen2

    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device; run with --smoke to check the script on CPU")
    device, accelerator = ("cpu", "cpu") if args.smoke else ("cuda", "gpu")
    name = "smoke" if args.smoke else "qwen2.5-0.5b"
    shapes, (prompts, response_tokens) = SHAPES[name], SIZES[name]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(build_tiny_qwen2(Path(tmp) / "model", seed=0, **shapes))
        result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__}
        rollout_prompts = 4 if args.smoke else args.rollout_prompts
        result.update(rollout_tokens_per_s(model_dir, device, rollout_prompts, response_tokens))
        result.update(ppo_steps(model_dir, accelerator, args.steps, Path(tmp) / "run", prompts, response_tokens))
        result.update(async_check(model_dir, device, rollout_prompts, response_tokens, Path(tmp)))
        if args.preset_steps > 0:  # --smoke: one step checks the wiring
            steps = 1 if args.smoke else args.preset_steps
            result.update(preset_steps(model_dir, accelerator, steps, Path(tmp) / "preset"))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
