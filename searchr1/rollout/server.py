"""A rollout server: our HF decode loop behind the token-in-token-out HTTP protocol of vLLM's OpenAI server.

The asynchronous trainer (:mod:`searchr1.rollout.async_driver`) drives multi-turn trajectories on one or more of
these processes over HTTP, exactly as it would drive ``vllm serve``; on CPU (no vLLM) ``searchr1 fit`` starts them
itself (``python -m searchr1.rollout.server --model DIR``). The wire protocol (docs/async.md):

* ``POST /v1/completions`` — OpenAI completions with token ids: ``{"prompt": [ids], "max_tokens", "temperature",
  "top_p", "top_k", "stop": [...], "seed", "logprobs": 1, "return_token_ids": true, "include_stop_str_in_output":
  true, "skip_special_tokens": false}`` → ``{"choices": [{"token_ids": [...], "logprobs": {"token_logprobs":
  [...]}, "finish_reason": "stop"|"length", "stop_reason": <stop string or null for EOS>, "token_versions":
  [...]}]}``. ``token_versions`` (our extension; vLLM omits it and the client then uses the server's version) is
  the policy version that sampled each token.
* ``POST /update_weights`` — ``{"path": file, "version": v}``: the server loads the ``torch.save``-d state dict at
  the next token boundary (decoding rows keep their KV cache and continue with the new weights) and answers when
  it is loaded. The vLLM equivalent is a worker extension called through ``/collective_rpc``.
* ``GET /health`` → ``{"version": v}``; ``GET /metrics`` → Prometheus text (tokens, busy and idle seconds).

One generation thread runs :func:`~searchr1.rollout.backends.hf_loop.decode_loop` with continuous admission:
requests join the batch between decoding steps (those with the same sampling settings; others wait for the next
loop), and each request leaves as soon as its turn ends. The server imports nothing of ``training``.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch

from searchr1.rollout.backends.base import GenerationOutput, SamplingParams
from searchr1.rollout.backends.hf import HFBackend
from searchr1.rollout.backends.hf_loop import decode_loop

READY_LINE = "searchr1 rollout server listening on "


@dataclass
class _Request:
    prompt: list[int]
    max_new: int
    params: SamplingParams
    done: threading.Event = field(default_factory=threading.Event)
    output: GenerationOutput | None = None
    error: BaseException | None = None

    @property
    def key(self) -> tuple:
        p = self.params
        return (p.temperature, p.top_p, p.top_k, p.do_sample, tuple(p.stop))


class RolloutServer:
    """The generation side: a request queue, weight updates at token boundaries, and counters.

    Args:
        backend: an :class:`HFBackend` on the server's own copy of the model.
        version: the policy version of the starting weights.
    """

    def __init__(self, backend: HFBackend, version: int = 0) -> None:
        self.backend, self.version = backend, version
        self._cond = threading.Condition()
        self._queue: deque[_Request] = deque()
        self._live: dict[int, _Request] = {}
        self._next_index = 0
        self._update: tuple[str, int, threading.Event] | None = None
        self._stopped = False
        self.tokens = 0
        self.busy_seconds = 0.0
        self.started = time.perf_counter()

    # ------------------------------------------------------------------ called from HTTP threads
    def complete(self, prompt: list[int], max_new: int, params: SamplingParams) -> GenerationOutput:
        """Queue one completion and wait for it (one turn: stop string, EOS or ``max_new`` tokens)."""
        if not prompt or max_new <= 0:
            raise ValueError(f"need a non-empty prompt and max_tokens > 0 (got {len(prompt)} ids, {max_new})")
        request = _Request(prompt, max_new, params)
        with self._cond:
            self._queue.append(request)
            self._cond.notify_all()
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.output  # type: ignore[return-value]

    def update_weights(self, path: str, version: int) -> None:
        """Load the state dict at ``path`` at the next token boundary (or at once when idle) as ``version``."""
        loaded = threading.Event()
        with self._cond:
            self._update = (path, version, loaded)
            self._cond.notify_all()
        loaded.wait()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def metrics_text(self) -> str:
        """Prometheus exposition of the server's counters."""
        wall = time.perf_counter() - self.started
        rows = [
            ("searchr1_rollout_tokens_total", "counter", "tokens sampled", self.tokens),
            ("searchr1_rollout_busy_seconds_total", "counter", "seconds spent decoding", self.busy_seconds),
            ("searchr1_rollout_wall_seconds_total", "counter", "seconds since start", wall),
            ("searchr1_rollout_cpu_seconds_total", "counter", "CPU seconds of the server process", time.process_time()),
            ("searchr1_rollout_policy_version", "gauge", "policy version of the loaded weights", self.version),
            ("searchr1_rollout_queued_requests", "gauge", "requests waiting to join the batch", len(self._queue)),
        ]
        return "".join(f"# HELP {n} {h}\n# TYPE {n} {t}\n{n} {v}\n" for n, t, h, v in rows)

    # ------------------------------------------------------------------ the generation thread
    def run(self) -> None:
        """Serve until :meth:`stop`: wait for work, apply weight updates, decode the queued requests."""
        while True:
            with self._cond:
                while not (self._queue or self._update or self._stopped):
                    self._cond.wait()
                if self._stopped:
                    return
            self._apply_update()
            if self._queue:
                self._decode()

    def _apply_update(self) -> int:
        """Load a pending weight update (a token boundary); returns the version now loaded."""
        with self._cond:
            update, self._update = self._update, None
        if update is not None:
            path, version, loaded = update
            state = torch.load(path, map_location=self.backend.device, weights_only=True)
            with torch.no_grad():
                self.backend.model.load_state_dict(state)
            self.version = version
            loaded.set()
        return self.version

    def _admit(self, key: tuple) -> list[tuple[int, list[int], int, int | None]]:
        """Move queued requests with sampling settings ``key`` into the running loop."""
        rows = []
        with self._cond:
            keep = deque()
            while self._queue:
                request = self._queue.popleft()
                if request.key != key:
                    keep.append(request)
                    continue
                index, self._next_index = self._next_index, self._next_index + 1
                self._live[index] = request
                seed = request.params.seed
                if request.params.do_sample and seed is None:
                    seed = int(torch.randint(0, 2**62, (1,)))
                rows.append((index, request.prompt, request.max_new, seed))
            self._queue = keep
        return rows

    def _finish(self, ended: list[tuple[int, GenerationOutput]]) -> list[None]:
        for index, out in ended:
            request = self._live.pop(index)
            request.output = out
            self.tokens += len(out.token_ids)
            request.done.set()
        return [None] * len(ended)

    def _decode(self) -> None:
        """One decode loop over every request with the first queued request's sampling settings."""
        first = self._queue[0].params
        key, backend = self._queue[0].key, self.backend
        start = time.perf_counter()
        try:
            with backend._generation_mode():
                decode_loop(
                    backend.model,
                    [],
                    [],
                    first,
                    self._finish,
                    batch_size=backend.batch_size,
                    eos_ids=set(backend.eos_ids),
                    pad_id=backend.pad_id,
                    stops=backend._stop_matcher(first.stop),
                    generator=None,
                    row_seed=0 if first.do_sample else None,
                    admit=lambda: self._admit(key),
                    on_step=self._apply_update,
                )
        except BaseException as err:  # fail the requests in flight, keep serving the next ones
            for request in self._live.values():
                request.error = err
                request.done.set()
            self._live.clear()
        finally:
            self.busy_seconds += time.perf_counter() - start


def params_from_request(body: dict[str, Any]) -> tuple[list[int], int, SamplingParams]:
    """``(prompt ids, max_tokens, sampling)`` of an OpenAI completions body with a token-id prompt."""
    prompt = body.get("prompt")
    if not isinstance(prompt, list) or not all(isinstance(i, int) for i in prompt):
        raise ValueError("this server takes token-id prompts only: 'prompt' must be a list of ints")
    temperature = float(body.get("temperature", 1.0))
    params = SamplingParams(
        max_new_tokens=int(body.get("max_tokens", 16)),
        temperature=temperature if temperature > 0 else 1.0,
        top_p=float(body.get("top_p", 1.0)),
        top_k=max(int(body.get("top_k", 0) or 0), 0),
        do_sample=temperature > 0,
        stop=list(body.get("stop") or []),
        seed=body.get("seed"),
    )
    return prompt, params.max_new_tokens, params


def completion_response(out: GenerationOutput, version: int) -> dict[str, Any]:
    """The OpenAI completions answer (vLLM's shape: ``finish_reason`` ``stop`` with ``stop_reason`` None for EOS)."""
    choice = {
        "index": 0,
        "text": "",
        "token_ids": out.token_ids,
        "logprobs": {"token_logprobs": out.logprobs},
        "finish_reason": "length" if out.finish_reason == "length" else "stop",
        "stop_reason": out.stop_string,
        "token_versions": out.versions if out.versions is not None else [version] * len(out.token_ids),
    }
    usage = {"completion_tokens": len(out.token_ids)}
    return {"object": "text_completion", "choices": [choice], "usage": usage}


def _handler(server: RolloutServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: one connection per client thread

        def log_message(self, *args: Any) -> None:  # no line per request
            pass

        def _send(self, status: int, payload: str, content_type: str = "application/json") -> None:
            data = payload.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(200, json.dumps({"version": server.version}))
            elif self.path == "/metrics":
                self._send(200, server.metrics_text(), "text/plain; version=0.0.4")
            else:
                self._send(404, json.dumps({"error": f"no route {self.path}"}))

        def do_POST(self) -> None:
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path == "/v1/completions":
                    prompt, max_new, params = params_from_request(body)
                    out = server.complete(prompt, max_new, params)
                    self._send(200, json.dumps(completion_response(out, server.version)))
                elif self.path == "/update_weights":
                    start = time.perf_counter()
                    server.update_weights(str(body["path"]), int(body["version"]))
                    self._send(200, json.dumps({"version": server.version, "seconds": time.perf_counter() - start}))
                else:
                    self._send(404, json.dumps({"error": f"no route {self.path}"}))
            except (ValueError, KeyError) as err:
                self._send(400, json.dumps({"error": str(err)}))
            except Exception as err:  # the client shows it: a server-side failure names itself
                self._send(500, json.dumps({"error": f"{type(err).__name__}: {err}"}))

    return Handler


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # every trajectory of the trainer holds a connection (the default backlog is 5)


def serve(backend: HFBackend, host: str = "127.0.0.1", port: int = 0, version: int = 0):
    """Start the HTTP front and the generation thread; returns ``(http server, rollout server, url)``."""
    rollout = RolloutServer(backend, version)
    http = _Server((host, port), _handler(rollout))
    http.daemon_threads = True
    threading.Thread(target=rollout.run, name="rollout-generation", daemon=True).start()
    threading.Thread(target=http.serve_forever, name="rollout-http", daemon=True).start()
    return http, rollout, f"http://{host}:{http.server_address[1]}"


def main(argv: list[str] | None = None) -> None:
    """``python -m searchr1.rollout.server --model DIR``: serve until killed; prints :data:`READY_LINE` + URL."""
    from searchr1.models import load_causal_lm, load_tokenizer, resolve_model_path

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="policy weights (folder, hub name, tiny: or pkg: path)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--batch-size", type=int, default=64, help="most rows decoded together")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--version", type=int, default=0, help="policy version of the starting weights")
    parser.add_argument("--device", default="cpu", help="where the model runs (cpu, cuda, cuda:1, ...)")
    parser.add_argument("--dtype", default=None, help="parameter dtype (float32, bfloat16, float16); default fp32")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    path = resolve_model_path(args.model)
    dtype = getattr(torch, args.dtype) if args.dtype else None
    model = load_causal_lm(path, dtype).to(args.device).eval()
    backend = HFBackend(model, load_tokenizer(path), batch_size=args.batch_size)
    http, _, url = serve(backend, args.host, args.port, args.version)
    print(READY_LINE + url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        http.shutdown()


if __name__ == "__main__":
    main()
