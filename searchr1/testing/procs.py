"""Process helpers for reliability tests and benchmarks: resident memory from ``/proc``, waiting on files."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes (``VmRSS`` of ``/proc/<pid>/status``; Linux only)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS line in /proc/{pid}/status (a kernel thread or a zombie?)")


def listening_addresses(port: int) -> list[str]:
    """Local IPv4/IPv6 addresses with a TCP socket listening on ``port`` (from ``/proc/net/tcp*``), as hex strings.

    ``0100007F`` is 127.0.0.1, ``00000000`` is 0.0.0.0 (all interfaces).
    """
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if int(port_hex, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                found.append(address)
    return found


def wait_for(condition: Callable[[], bool], timeout: float, what: str, poll_s: float = 0.05) -> None:
    """Poll ``condition`` until true; ``TimeoutError`` naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll_s)
    raise TimeoutError(f"gave up after {timeout}s waiting for {what}")
