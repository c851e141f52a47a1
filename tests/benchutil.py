"""Run a script from ``benchmarks/`` in a subprocess and return the one JSON line it must print."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(script: str, args: list[str], timeout: float) -> dict:
    """Run ``python benchmarks/<script> *args``; assert it exits 0 and prints exactly one line; return it parsed."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0])
