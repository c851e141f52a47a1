"""Start ``searchr1-retrieval serve`` as a subprocess on a free loopback port (tests, benchmarks, demos).

``with ServerProcess(index_dir) as server: HTTPRetriever(server.url)`` — the process is terminated (then
killed) on exit, including when the body raises.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

_SERVE = "import sys; from searchr1.retrieval.cli import serve_main; serve_main(sys.argv[1:])"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A retrieval server subprocess.

    Args:
        index_dir: index folder to serve.
        port: port to bind (None: a free one).
        extra_args: more ``serve`` flags (e.g. ``["--batch-window-ms", "5"]``).
        startup_timeout: seconds to wait for ``/health`` to answer.
        log_path: file receiving the server's stdout/stderr (None: discarded).
    """

    def __init__(
        self,
        index_dir: str | Path,
        port: int | None = None,
        extra_args: list[str] | None = None,
        startup_timeout: float = 60.0,
        log_path: str | Path | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.url = f"http://{self.host}:{self.port}"
        self.cmd = [sys.executable, "-c", _SERVE, "serve", "--index", str(index_dir), "--host", self.host]
        self.cmd += ["--port", str(self.port), *(extra_args or [])]
        self.startup_timeout = startup_timeout
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> ServerProcess:
        """Launch and wait until ``/health`` answers (raises with the log tail if it dies or times out)."""
        log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"retrieval server exited with code {self.proc.returncode}: {self._log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"retrieval server did not answer within {self.startup_timeout}s: {self._log_tail()}")

    def _log_tail(self) -> str:
        if self.log_path and Path(self.log_path).exists():
            return Path(self.log_path).read_text(errors="replace")[-2000:]
        return "(no log; pass log_path to keep one)"

    def stop(self) -> None:
        """Terminate the process (kill after 10 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
