"""Fault injection for the retrieval server: our real app behind an ASGI wrapper whose failures are switched live.

``FaultInjector(create_app(retriever))`` answers every request like the wrapped app until a fault is set, through
``POST /_faults {"mode": ..., "delay_s": ..., "status": ..., "count": ...}`` (``GET /_faults`` reads it back with
counters, which setting a fault resets). Modes, applied to ``POST /retrieve`` only:

- ``none``: pass through.
- ``slow``: sleep ``delay_s`` seconds, then answer normally (a client with a shorter timeout gives up first).
- ``status``: answer ``status`` (default 500) with a JSON ``detail``.
- ``garbage``: answer 200 with a body that is not JSON.
- ``bad_shape``: answer 200 with valid JSON of the wrong shape (no result lists).

``count`` limits the fault to the next ``count`` requests (then ``none`` again); null keeps it until changed.
``skip`` lets that many ``/retrieve`` requests through first (e.g. a trainer's start-up probe, then an outage).
:class:`FaultyServerProcess` runs it as a real subprocess (``python -m searchr1.testing.faults --index DIR``) that
can also be SIGKILLed and restarted on the same port. The wrapped server code is the production one, untouched.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from searchr1.retrieval.client import HTTPRetriever
from searchr1.retrieval.launch import ServerProcess

FAULT_MODES = ("none", "slow", "status", "garbage", "bad_shape")
GARBAGE_BODY = b"\x00<html>this is not JSON \xff"


@dataclass
class FaultPlan:
    """The fault applied to ``/retrieve`` requests.

    Attributes:
        mode: one of :data:`FAULT_MODES`.
        delay_s: seconds to wait before answering in ``slow`` mode.
        status: HTTP status sent in ``status`` mode.
        count: number of requests still to fault (None: all until changed).
        skip: ``/retrieve`` requests still to pass through before the fault applies.
    """

    mode: str = "none"
    delay_s: float = 0.0
    status: int = 500
    count: int | None = None
    skip: int = 0

    def __post_init__(self) -> None:
        if self.mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {self.mode!r}; valid: {', '.join(FAULT_MODES)}")
        if self.delay_s < 0 or not 100 <= self.status <= 599 or (self.count is not None and self.count < 0):
            raise ValueError("need delay_s >= 0, 100 <= status <= 599 and count >= 0 or null")
        if self.skip < 0:
            raise ValueError(f"need skip >= 0, got {self.skip}")


class FaultInjector:
    """ASGI wrapper putting :class:`FaultPlan` faults in front of ``app`` (see the module docstring).

    Args:
        app: the real retrieval app (``create_app(...)``).
        plan: the initial fault (default: none).
    """

    def __init__(self, app: ASGIApp, plan: FaultPlan | None = None) -> None:
        self.app = app
        self.plan = plan or FaultPlan()
        self.faulted = 0
        self.passed = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/_faults":
            await self._control(scope, receive, send)
            return
        plan = self.plan
        skipped = scope["path"] == "/retrieve" and plan.skip > 0
        if skipped:
            plan.skip -= 1
        if scope["path"] != "/retrieve" or plan.mode == "none" or plan.count == 0 or skipped:
            self.passed += scope["path"] == "/retrieve"
            await self.app(scope, receive, send)
            return
        self.faulted += 1
        if plan.count is not None:
            plan.count -= 1
        if plan.mode == "slow":
            await asyncio.sleep(plan.delay_s)
            await self.app(scope, receive, send)
        elif plan.mode == "status":
            await _drain(receive)
            await _respond(send, plan.status, json.dumps({"detail": "injected fault"}).encode())
        elif plan.mode == "garbage":
            await _drain(receive)
            await _respond(send, 200, GARBAGE_BODY)
        else:  # bad_shape
            await _drain(receive)
            await _respond(send, 200, b'{"unexpected": [1, 2, 3]}')

    async def _control(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "POST":
            try:
                self.plan = FaultPlan(**json.loads(await _drain(receive) or b"{}"))
                self.faulted = self.passed = 0
            except (ValueError, TypeError) as err:
                await _respond(send, 422, json.dumps({"detail": str(err)}).encode())
                return
        state = {**asdict(self.plan), "faulted": self.faulted, "passed": self.passed}
        await _respond(send, 200, json.dumps(state).encode())


async def _drain(receive: Receive) -> bytes:
    """Read the whole request body."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _respond(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class FaultyServerProcess(ServerProcess):
    """A real retrieval server subprocess (our app + :class:`FaultInjector`) that tests can break.

    Args:
        index_dir: index folder to serve.
        port: port to bind (None: a free one; kept across :meth:`restart`).
        startup_timeout: seconds to wait for ``/health``.
        log_path: file receiving the server's output.
    """

    def __init__(
        self,
        index_dir: str | Path,
        port: int | None = None,
        startup_timeout: float = 60.0,
        log_path: str | Path | None = None,
    ) -> None:
        super().__init__(index_dir, port=port, startup_timeout=startup_timeout, log_path=log_path)
        self.cmd = [sys.executable, "-m", "searchr1.testing.faults", "--index", str(index_dir)]
        self.cmd += ["--host", self.host, "--port", str(self.port)]

    def set_fault(
        self, mode: str = "none", delay_s: float = 0.0, status: int = 500, count: int | None = None, skip: int = 0
    ) -> dict:
        """Switch the live fault (see :class:`FaultPlan`); returns the server's fault state."""
        payload = {"mode": mode, "delay_s": delay_s, "status": status, "count": count, "skip": skip}
        resp = httpx.post(f"{self.url}/_faults", json=payload, timeout=5.0)
        resp.raise_for_status()
        return resp.json()

    def fault_state(self) -> dict[str, Any]:
        """The current fault and the counts of faulted / passed ``/retrieve`` requests."""
        return httpx.get(f"{self.url}/_faults", timeout=5.0).json()

    def kill(self) -> None:
        """SIGKILL the server (no shutdown handlers run) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def restart(self) -> FaultyServerProcess:
        """Kill (if alive) and start again on the same port; returns when ``/health`` answers."""
        self.kill()
        return self.start()

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return None if self.proc is None or self.proc.poll() is not None else self.proc.pid


class RankURLRetriever(HTTPRetriever):
    """An :class:`~searchr1.retrieval.HTTPRetriever` whose server depends on the process's ``LOCAL_RANK``: one
    multi-rank command line (every rank parses the same arguments) in which only some ranks can reach a server.

    Args:
        urls: one server URL per local rank.
        kwargs: the other :class:`~searchr1.retrieval.HTTPRetriever` arguments.
    """

    def __init__(self, urls: list[str], **kwargs: Any) -> None:
        super().__init__(urls[int(os.environ.get("LOCAL_RANK", "0"))], **kwargs)


def serve_faulty_main(argv: Sequence[str] | None = None) -> None:
    """``python -m searchr1.testing.faults --index DIR [--host H] [--port P]``: serve with fault injection."""
    import uvicorn

    from searchr1.retrieval.indexes import load_retriever
    from searchr1.retrieval.server import create_app

    parser = argparse.ArgumentParser(prog="python -m searchr1.testing.faults", description=__doc__.split("\n")[0])
    parser.add_argument("--index", required=True, help="index folder from searchr1-index build")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    app = FaultInjector(create_app(load_retriever(args.index)))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    serve_faulty_main()
