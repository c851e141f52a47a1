"""Security defaults: loopback bind, no pickle / remote code on untrusted input unless opted in, body size limit."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import searchr1
from searchr1.models import load_causal_lm, load_tokenizer
from searchr1.retrieval.cli import _serve_parser
from searchr1.retrieval.launch import free_port
from searchr1.retrieval.server import ServerLimits, create_app
from searchr1.testing import listening_addresses, wait_for

PACKAGE = Path(searchr1.__file__).parent
LOOPBACK = "0100007F"  # 127.0.0.1 as /proc/net/tcp writes it


def calls(name: str) -> list[tuple[Path, ast.Call]]:
    """Every call of a function or method called ``name`` in the package source."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                if called == name:
                    found.append((path, node))
    return found


def test_serve_binds_loopback_by_default():
    assert _serve_parser().parse_args(["serve", "--index", "x"]).host == "127.0.0.1"


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_real_server_without_host_flag_listens_on_loopback_only(index_dir):
    port = free_port()
    code = "import sys; from searchr1.retrieval.cli import serve_main; serve_main(sys.argv[1:])"
    proc = subprocess.Popen([sys.executable, "-c", code, "serve", "--index", str(index_dir), "--port", str(port)])
    try:
        wait_for(lambda: bool(listening_addresses(port)) or proc.poll() is not None, 60, "the server to listen")
        assert listening_addresses(port) == [LOOPBACK]
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_no_unsafe_deserialisation_in_the_package():
    """torch.load always with weights_only=True; no pickle.load(s); trust_remote_code never hard-wired to True."""
    for path, node in calls("load") + calls("loads"):
        owner = getattr(node.func.value, "id", None) if isinstance(node.func, ast.Attribute) else None
        assert owner not in ("pickle", "cPickle", "dill"), f"{path}:{node.lineno} unpickles"
        if owner == "torch":
            kw = {k.arg: k.value for k in node.keywords}
            assert getattr(kw.get("weights_only"), "value", None) is True, f"{path}:{node.lineno} without weights_only"
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                assert not (isinstance(node.value, ast.Constant) and node.value.value is True), path


def test_remote_code_is_opt_in():
    for fn in (load_tokenizer, load_causal_lm):
        assert inspect.signature(fn).parameters["trust_remote_code"].default is False


def test_oversized_body_refused_before_parsing():
    from fastapi.testclient import TestClient

    from searchr1.retrieval import BM25Retriever

    from .conftest import DATA

    limits = ServerLimits(max_body_bytes=1000)
    app = create_app(BM25Retriever(corpus=str(DATA / "corpus.jsonl")), limits)
    with TestClient(app) as client:
        body = b'{"queries": ["' + b"a" * 2000 + b'"]}'
        resp = client.post("/retrieve", content=body)
        assert resp.status_code == 413 and "exceeds the limit of 1000" in resp.json()["detail"]
        resp = client.post("/retrieve", content=iter([body[:600], body[600:]]))  # chunked, no content-length
        assert resp.status_code == 413
