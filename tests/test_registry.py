"""``Registry``: names, aliases, lazy entries imported on first use, errors that list the valid names."""

from __future__ import annotations

import subprocess
import sys

import pytest

from searchr1.registry import Registry


def test_register_get_aliases_and_errors():
    reg: Registry[int] = Registry("thing")
    reg.register("one", "uno")(1)
    reg.register_lazy("sep", "os:sep")
    assert reg.names() == ["one", "sep", "uno"] and list(reg) == reg.names() and "uno" in reg
    assert reg.get("uno") == 1
    with pytest.raises(ValueError, match="unknown thing 'two'; valid names: one, sep, uno"):
        reg.get("two")
    with pytest.raises(ValueError, match="thing 'one' is already registered"):
        reg.register_lazy("one", "os:sep")
    with pytest.raises(ValueError, match="'package.module:attribute'"):
        reg.register_lazy("bad", "os.sep")


def test_lazy_entry_imports_its_module_on_first_get_only():
    code = (
        "import sys\n"
        "from searchr1.registry import Registry\n"
        "reg = Registry('thing')\n"
        "reg.register_lazy('csv', 'csv:DictReader')\n"
        "assert 'csv' in reg and 'csv' not in sys.modules\n"
        "assert reg.get('csv').__name__ == 'DictReader' and 'csv' in sys.modules\n"
        "reg.unregister('csv')\n"
        "assert 'csv' not in reg\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_importing_the_backend_and_index_registries_imports_no_heavy_backend():
    code = (
        "import sys, searchr1.rollout, searchr1.retrieval.indexes, searchr1.retrieval.cli\n"
        "from searchr1.rollout.backends.base import BACKENDS\n"
        "assert 'vllm' in BACKENDS\n"
        "heavy = [m for m in ('vllm', 'faiss', 'searchr1.rollout.backends.vllm', 'searchr1.retrieval.dense') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
