"""Slow: ``tools/learn_smollm2.py`` end to end on a reduced run, on a tiny model shaped like SmolLM2-Instruct.

The real demo (docs/learning.md) takes an hour on 2 CPU cores; this runs the same pipeline — engine-built SFT data,
the bf16-mixed SFT warm start, greedy held-out evaluations, then GRPO with LoRA, the no-search ablation and full
fine-tuning through the real CLI and ``configs/learn_smollm2_lora.yaml`` — on a randomly initialised Llama with
SmolLM2's traits (tied embeddings, its ChatML template with a default system message, ``<|im_end|>`` as eos and
pad), with 2 SFT steps and 1 RL step. It checks the pipeline's outputs, not learning (a random model earns no
reward, so an entropy bonus gives the RL step a gradient).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

EMBED = "model.embed_tokens.weight"


def _weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.timeout(900)  # ~1 min of CPU; far longer when the machine is shared
def test_learn_smollm2_reduced_pipeline_writes_its_results_and_trains_what_each_variant_trains(tmp_path):
    import learn_smollm2

    from searchr1.data.synthetic import generate_task, tokenizer_texts
    from searchr1.models.tiny import build_tiny_llama

    init = build_tiny_llama(tmp_path / "init", texts=tokenizer_texts(generate_task(1)), vocab_size=600)
    variants = ["grpo_lora", "grpo_lora_nosearch", "grpo_full"]
    learn_smollm2.main(
        ["--model", str(init), "--out", str(tmp_path / "run"), "--seed", "1", "--sft-steps", "2", "--sft-batch", "4",
         "--rl-steps", "1", "--heldout", "4", "--fit-arg=--model.algorithm.entropy_coef=0.01", "--variants", *variants]
    )  # fmt: skip
    out = tmp_path / "run" / "seed1"
    rows = json.loads((out / "results.json").read_text())
    assert [(r["run"], r["search"]) for r in rows] == [
        ("sft", True), ("sft", False), ("grpo_lora", True), ("grpo_lora_nosearch", False), ("grpo_full", True)
    ]  # fmt: skip
    for r in rows:
        assert r["n"] == 4 and 0.0 <= r["em"] <= 1.0 and 0.0 <= r["answered"] <= 1.0, r
        assert r["seconds"] > 0 and r["eval_seconds"] > 0
    for r in rows[2:]:
        assert r["rollout"] > 0 and r["update"] > 0 and r["peak_rss_gb"] > 0, r
        assert len(r["curve"]["reward"]) == len(r["curve"]["searches"]) == 1, r["curve"]
    assert (out / "summary.md").read_text().count("\n") == 2 + len(rows)
    start, sft = _weights(init), _weights(out / "sft")
    assert not sft[EMBED].equal(start[EMBED])  # the warm start was trained and written
    lora, full = _weights(out / "grpo_lora" / "policy"), _weights(out / "grpo_full" / "policy")
    assert set(lora) == set(sft) == set(full)  # merged LoRA export: plain Hugging Face names
    # LoRA trains adapters on the linear layers only: embeddings and norms stay the warm start's
    assert lora[EMBED].equal(sft[EMBED]) and all(lora[k].equal(sft[k]) for k in sft if "norm" in k)
    assert not lora["model.layers.0.self_attn.q_proj.weight"].equal(sft["model.layers.0.self_attn.q_proj.weight"])
    assert not full[EMBED].equal(sft[EMBED])  # full fine-tuning moves the (tied) embeddings too
