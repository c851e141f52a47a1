"""Headless Chromium (Debian's ``chromium`` package) for tests that check a page renders in a real browser.

:func:`chromium` skips the test when no Chromium is installed locally, and fails it under CI (``CI`` set), where
``.ci/run`` installs the package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    """The Chromium executable (skips without one; fails under CI)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        reason = "no chromium on PATH (Debian: apt-get install -y chromium; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def _run(args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="searchr1-chromium-") as profile:
        cmd = [chromium(), *FLAGS, f"--user-data-dir={profile}", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def dump_dom(page: Path, fragment: str = "") -> str:
    """The DOM after the page's scripts ran (``--dump-dom``); ``fragment`` is appended to the URL (``#a=b``)."""
    return _run(["--dump-dom", page.resolve().as_uri() + fragment]).stdout


def screenshot(page: Path, out: Path, size: str = "1200,2000") -> Path:
    """A PNG of the rendered page."""
    _run([f"--screenshot={out}", f"--window-size={size}", page.resolve().as_uri()])
    return out
