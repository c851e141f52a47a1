#!/usr/bin/env python3
"""Two-command quickstart: set up ``.venv/`` and run the main job, or set up and run the tests.

Usage (from the repository root, with only Python >= 3.10 and pip):

    python3 tools/quickstart.py run    # set up .venv, then train on the embedded default (searchr1 fit)
    python3 tools/quickstart.py test   # set up .venv, then run the full CPU test suite (incl. slow tests)

Setup creates or reuses a virtual environment at ``.venv/`` in the repository root, installs
``torch==2.13.0`` first (CPU machines get the CPU wheel; GPU machines the CUDA one from the same pin)
and then this project with its ``dev`` extra in editable mode. It is skipped when ``pyproject.toml``
has not changed since the last successful setup. Extra arguments after the command are passed on
(to ``searchr1 fit`` for ``run``, to ``pytest`` for ``test``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
TORCH_PIN = "torch==2.13.0"
STAMP = VENV / ".searchr1-setup"


def _bin(name: str) -> Path:
    return VENV / ("Scripts" if os.name == "nt" else "bin") / name


def _call(cmd: list[str | Path]) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT)


def setup() -> None:
    """Create/reuse ``.venv`` and install torch (pinned) then the project, unless already done."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + TORCH_PIN.encode()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == digest and _bin("searchr1").exists():
        print(f"[quickstart] {VENV} is up to date", flush=True)
        return
    if not _bin("python").exists():
        print(f"[quickstart] creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [_bin("python"), "-m", "pip", "install", "--disable-pip-version-check"]
    _call([*pip, "--upgrade", "pip"])
    _call([*pip, TORCH_PIN])
    _call([*pip, "-e", ".[dev]"])
    STAMP.write_text(digest)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"run", "test", "setup"}:
        print(__doc__)
        return 2
    setup()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if argv[0] == "run":
        cmd = [str(_bin("searchr1")), "fit", *argv[1:]]
    elif argv[0] == "test":
        # The full CPU suite: default tests plus the `slow` ones; GPU and vLLM tests need their hardware/venv.
        cmd = [str(_bin("python")), "-m", "pytest", "-m", "not gpu and not vllm", *argv[1:]]
    else:
        return 0
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
