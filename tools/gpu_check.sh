#!/usr/bin/env bash
# The GPU path in one short run (< 8 minutes on one H100/H200): CUDA HF rollout tokens/s and two PPO steps of a
# ~0.4B random Qwen2 (Qwen2.5-0.5B layer shapes) with FSDP2 on 1 GPU in bf16-mixed, an async check (a rollout
# server process on the GPU, 3 batches with weight pushes: tokens/s, push time, staleness), then 3 steps of the
# small-GPU LoRA preset configs/grpo_qwen2.5-0.5b_lora_1gpu.yaml on the same model (--preset-steps N; 0 skips);
# prints one JSON line.
# Needs torch (CUDA), lightning, transformers and this package; no network. vLLM is optional: where it is installed
# the async check runs vLLM's own server (NCCL weight push with 2+ GPUs), else ours.
#   bash tools/gpu_check.sh            # on a GPU machine
#   bash tools/gpu_check.sh --smoke    # the same code on CPU with a tiny model (checks the script)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
if ! "$PY" -c "import searchr1" 2>/dev/null; then
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # a bare machine with torch/lightning/transformers only
fi
export TOKENIZERS_PARALLELISM=false
exec "$PY" benchmarks/gpu_check.py "$@"
