"""The trainer's side of the rollout servers: an HTTP client for their protocol and the processes ``fit`` starts.

:class:`RemoteServers` speaks the token-in-token-out completions protocol of :mod:`searchr1.rollout.server` (the
shape of vLLM's OpenAI server: a ``vllm serve`` URL can be given instead); each request goes to the server with the
fewest requests in flight. A server that stops answering raises :class:`RolloutServerError` naming it, at once
(refused or reset connection) or after ``timeout`` seconds. :class:`ServerProcesses` starts local servers
(``python -m searchr1.rollout.server``) that die with their parent (``PR_SET_PDEATHSIG`` on Linux) and are stopped
by :meth:`ServerProcesses.close`.
"""

from __future__ import annotations

import atexit
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from searchr1.rollout.backends.base import GenerationOutput, SamplingParams


class RolloutServerError(RuntimeError):
    """A rollout server failed, died or could not be reached."""


class RemoteServers:
    """Client of one or more rollout servers reached by URL.

    Args:
        urls: base URLs (``http://host:port``).
        timeout: seconds one request may take before the server counts as hung.
    """

    def __init__(self, urls: list[str], timeout: float = 300.0) -> None:
        if not urls:
            raise ValueError("RemoteServers needs at least one server URL")
        self.urls, self.timeout = list(urls), timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._in_flight = [0] * len(urls)
        self.version = 0
        """Version of the weights every server holds (set after each push)."""

    # ------------------------------------------------------------------ transport
    def _connection(self, index: int) -> http.client.HTTPConnection:
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        if index not in conns:
            parts = urlsplit(self.urls[index])
            conns[index] = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout)
        return conns[index]

    def _call(self, index: int, method: str, path: str, body: dict | None = None) -> str:
        """One request on this thread's keep-alive connection to server ``index``; returns the body text."""
        url = self.urls[index] + path
        conn = self._connection(index)
        try:
            payload = None if body is None else json.dumps(body)
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            text = response.read().decode()
        except (OSError, http.client.HTTPException) as err:
            conn.close()
            self._local.conns.pop(index, None)
            raise RolloutServerError(
                f"rollout server {self.urls[index]} stopped answering ({type(err).__name__}: {err}) during "
                f"{method} {path}; it crashed, was killed or is overloaded beyond timeout={self.timeout}s. "
                "Check its log, then restart the run from the last checkpoint (--ckpt_path)"
            ) from err
        if response.status != 200:
            raise RolloutServerError(f"rollout server {url} answered HTTP {response.status}: {text[:500]}")
        return text

    # ------------------------------------------------------------------ protocol
    def complete(self, prompt: list[int], params: SamplingParams) -> GenerationOutput:
        """One turn of ``prompt`` on the least busy server; tokens carry the version that sampled them."""
        with self._lock:
            index = min(range(len(self.urls)), key=self._in_flight.__getitem__)
            self._in_flight[index] += 1
        try:
            text = self._call(index, "POST", "/v1/completions", completion_request(prompt, params))
        finally:
            with self._lock:
                self._in_flight[index] -= 1
        return parse_completion(json.loads(text), self.version)

    def push_weights(self, path: str, version: int) -> float:
        """Have every server load the state dict at ``path`` as ``version``; returns the seconds until all did."""
        start = time.perf_counter()
        with ThreadPoolExecutor(len(self.urls)) as pool:
            body = {"path": path, "version": version}
            list(pool.map(lambda i: self._call(i, "POST", "/update_weights", body), range(len(self.urls))))
        self.version = version
        return time.perf_counter() - start

    def counters(self) -> list[dict[str, float]]:
        """Each server's Prometheus counters (``/metrics``) as ``{name: value}``."""
        out = []
        for index in range(len(self.urls)):
            values = {}
            for line in self._call(index, "GET", "/metrics").splitlines():
                if line and not line.startswith("#"):
                    name, value = line.rsplit(" ", 1)
                    values[name] = float(value)
            out.append(values)
        return out


def completion_request(prompt: list[int], params: SamplingParams) -> dict:
    """The OpenAI completions body for one turn (vLLM's token-id options included)."""
    return {
        "model": "policy",
        "prompt": list(prompt),
        "max_tokens": params.max_new_tokens,
        "temperature": params.temperature if params.do_sample else 0.0,
        "top_p": params.top_p,
        "top_k": params.top_k if params.top_k > 0 else -1,
        "stop": list(params.stop),
        "seed": params.seed,
        "logprobs": 1,
        "return_token_ids": True,
        "return_tokens_as_token_ids": True,
        "include_stop_str_in_output": True,
        "skip_special_tokens": False,
    }


def parse_completion(body: dict, version: int) -> GenerationOutput:
    """A :class:`GenerationOutput` from a completions answer (``stop_reason`` None on ``stop`` means EOS)."""
    choice = body["choices"][0]
    ids = [int(i) for i in choice["token_ids"]]
    logprobs = [float(x) for x in choice["logprobs"]["token_logprobs"]]
    reason, stop = choice["finish_reason"], choice.get("stop_reason")
    if reason == "stop":
        reason, stop = ("stop", stop) if isinstance(stop, str) else ("eos", None)
    versions = choice.get("token_versions") or [version] * len(ids)
    return GenerationOutput(ids, logprobs, reason, stop, [int(v) for v in versions])


def _die_with_parent() -> None:  # runs in the child before exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: close() and atexit still stop the servers
        pass


class ServerProcesses:
    """Local rollout server processes (``python -m searchr1.rollout.server``).

    Args:
        count: servers to start.
        model: the model folder they load (the architecture; the trainer pushes its weights right after).
        log_dir: each server writes ``rollout_server_<i>.log`` here.
        threads: torch threads per server (0: torch's default).
        batch_size: most rows each server decodes together.
        startup_timeout: seconds to wait for a server's ready line.
        extra_args: more ``searchr1.rollout.server`` options (e.g. ``["--device", "cuda", "--dtype", "bfloat16"]``).
    """

    def __init__(
        self,
        count: int,
        model: str,
        log_dir: str | Path,
        threads: int = 0,
        batch_size: int = 64,
        startup_timeout: float = 120.0,
        extra_args: list[str] | None = None,
    ) -> None:
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.urls: list[str] = []
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        args = ["--model", model, "--threads", str(threads), "--batch-size", str(batch_size), *(extra_args or [])]
        atexit.register(self.close)  # a crashed trainer still stops its servers
        try:
            for i in range(count):
                log = log_dir / f"rollout_server_{i}.log"
                self.logs.append(log)
                proc = subprocess.Popen(
                    [sys.executable, "-m", "searchr1.rollout.server", *args],
                    stdout=subprocess.PIPE,
                    stderr=log.open("w"),
                    text=True,
                    preexec_fn=_die_with_parent if os.name == "posix" else None,
                )
                self.procs.append(proc)
            self.urls = [self._ready_url(p, log, startup_timeout) for p, log in zip(self.procs, self.logs)]
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _ready_url(proc: subprocess.Popen, log: Path, timeout: float) -> str:
        from searchr1.rollout.server import READY_LINE

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if line.startswith(READY_LINE):
                return line[len(READY_LINE) :].strip()
            if not line and proc.poll() is not None:
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise RolloutServerError(f"rollout server exited with code {proc.returncode} at start:\n{tail}")
        raise RolloutServerError(f"rollout server gave no ready line in {timeout}s (log: {log})")

    def check_alive(self) -> None:
        """Raise :class:`RolloutServerError` when a server process has exited."""
        for i, proc in enumerate(self.procs):
            code = proc.poll()
            if code is not None:
                raise RolloutServerError(
                    f"rollout server {i} ({self.urls[i] if i < len(self.urls) else '?'}) exited with code {code} "
                    f"mid-run (log: {self.logs[i]}); stopping. Restart from the last checkpoint with --ckpt_path"
                )

    def close(self) -> None:
        """Stop every server (SIGTERM, then SIGKILL after 5 s)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        self.procs = []
