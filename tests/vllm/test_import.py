"""The vLLM backend is reachable through the registry and importing searchr1 never imports vllm."""

from __future__ import annotations

import subprocess
import sys

import pytest

from searchr1.rollout.backends.base import get_backend_class
from searchr1.rollout.backends.vllm import map_finish_reason

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm


def test_module_import_does_not_import_vllm():
    code = (
        "import sys, searchr1, searchr1.rollout.backends.base, searchr1.rollout.backends.vllm\n"
        "assert 'vllm' not in sys.modules, 'vllm was imported at module import'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registry_resolves_vllm_backend():
    cls = get_backend_class("vllm")
    assert cls.__name__ == "VLLMBackend" and cls.__module__ == "searchr1.rollout.backends.vllm"


@pytest.mark.parametrize(
    ("finish", "stop_reason", "expected"),
    [
        ("length", None, ("length", None)),
        ("stop", None, ("eos", None)),  # the tokenizer's EOS
        ("stop", 1234, ("eos", None)),  # an EOS id from generation_config (stop token id)
        ("stop", "</search>", ("stop", "</search>")),
    ],
)
def test_finish_reason_mapping(finish, stop_reason, expected):
    assert map_finish_reason(finish, stop_reason) == expected


def test_abort_is_an_error():
    with pytest.raises(RuntimeError, match="abort"):
        map_finish_reason("abort", None)
