"""Module-level lazy exports: ``__getattr__ = lazy_exports(__name__, {"Name": "pkg.module"})``.

Heavy submodules (Lightning, faiss, fastapi, vLLM) load only when one of their names is first used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``names[name]`` on first access and returns its attribute ``name``."""

    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(names[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
