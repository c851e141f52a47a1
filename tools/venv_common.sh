# Shared preamble of tools/setup_vllm_venv.sh and tools/setup_trl_venv.sh (sourced, not run).
#
# The caller sets VENV (folder) and KEY_TEXT (what it installs, e.g. the package pins); this file provides:
#   venv_begin         cd to the repository root; return 1 ("up to date") when $VENV was set up by the same
#                      scripts with the same KEY_TEXT and pyproject.toml, else create $VENV and install pip + torch;
#   venv_done          record the setup key in $VENV/.searchr1-setup;
#   PIP                the venv's pip command (array).
# Environment: PYTHON (default python3), TORCH_PIN (default torch==2.13.0: the CPU wheel on CPU machines, so no
# later resolve can swap it for a CUDA build), FORCE=1 to redo the setup.

PYTHON="${PYTHON:-python3}"
TORCH_PIN="${TORCH_PIN:-torch==2.13.0}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PIP=("$VENV/bin/python" -m pip)
_SCRIPT="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"

_venv_key() {
    { cat "$ROOT/tools/venv_common.sh" "$_SCRIPT" "$ROOT/pyproject.toml"; echo "$KEY_TEXT $TORCH_PIN"; } | sha256sum | cut -d' ' -f1
}

venv_begin() {
    cd "$ROOT"
    if [ "${FORCE:-0}" != 1 ] && [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.searchr1-setup" 2>/dev/null)" = "$(_venv_key)" ]; then
        echo "$VENV is up to date (setup key unchanged)"
        return 1
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV"
    fi
    rm -f "$VENV/.searchr1-setup"
    "${PIP[@]}" install --disable-pip-version-check --upgrade pip
    "${PIP[@]}" install --disable-pip-version-check "$TORCH_PIN"
}

venv_done() {
    _venv_key > "$VENV/.searchr1-setup"
}
