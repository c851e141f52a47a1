#!/usr/bin/env bash
# Create the separate virtual environment `.venv-trl` for the TRL comparison in benchmarks/train_step.py.
#
# TRL brings its own accelerate/datasets/transformers pins, so it lives apart from the main `.venv`.
# The benchmark runs TRL's GRPOTrainer there as a subprocess (benchmarks/trl_grpo.py) on a tiny model folder
# saved by the main environment, so searchr1 itself is not installed here.  Usage, from the repository root:
#
#     bash tools/setup_trl_venv.sh
#     .venv/bin/python benchmarks/train_step.py        # finds .venv-trl/bin/python by itself
#
# Overrides: VENV (default .venv-trl), PYTHON (default python3), TRL_PACKAGE (default trl==1.16.0).
set -euo pipefail

VENV="${VENV:-.venv-trl}"
TRL_PACKAGE="${TRL_PACKAGE:-trl==1.16.0}"
KEY_TEXT="$TRL_PACKAGE"
source "$(dirname "${BASH_SOURCE[0]}")/venv_common.sh"
venv_begin || exit 0   # reused: same scripts, package and pyproject.toml as the last successful setup

# 1. torch first and pinned (venv_begin; the CPU wheel on CPU machines), so that TRL's resolve cannot swap it.
# 2. TRL and its dependencies (transformers, accelerate, datasets), with torch held where step 1 put it.
CONSTRAINTS="$(mktemp)"
echo "$TORCH_PIN" > "$CONSTRAINTS"
"${PIP[@]}" install -c "$CONSTRAINTS" "$TRL_PACKAGE"
rm -f "$CONSTRAINTS"

"$VENV/bin/python" - <<'PY'
import accelerate, torch, transformers, trl
print(f"trl {trl.__version__} | torch {torch.__version__} | transformers {transformers.__version__} "
      f"| accelerate {accelerate.__version__}")
PY
venv_done
echo "Done: $VENV is ready. Run: .venv/bin/python benchmarks/train_step.py"
