"""A tiny name → object registry used for estimators, losses, rewards, backends, index kinds and poolers.

``Registry.register("name", "alias")`` is a decorator; ``Registry.register_lazy("name", "pkg.module:attr")``
registers an object by import path, imported on first ``get`` (so an optional heavy dependency such as vLLM is
only imported when its entry is asked for). ``Registry.get(name)`` raises a ``ValueError`` that lists every valid
name when the name is unknown, so a typo in a config says what to write instead.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class _LazyEntry:
    """An entry registered by import path (``"pkg.module:attr"``), resolved on first use."""

    def __init__(self, target: str) -> None:
        module, _, attr = target.partition(":")
        if not module or not attr:
            raise ValueError(f"a lazy registry entry is 'package.module:attribute', got {target!r}")
        self.module, self.attr = module, attr

    def resolve(self):
        return getattr(importlib.import_module(self.module), self.attr)


class Registry(Generic[T]):
    """Maps names (and aliases) to objects of one kind.

    Args:
        kind: what is registered, used in error messages (e.g. ``"advantage estimator"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T | _LazyEntry] = {}

    def _add(self, key: str, obj: T | _LazyEntry) -> None:
        if key in self._items:
            raise ValueError(f"{self.kind} {key!r} is already registered")
        self._items[key] = obj

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        """Decorator registering an object under ``name`` and ``aliases``."""

        def decorator(obj: T) -> T:
            for key in (name, *aliases):
                self._add(key, obj)
            return obj

        return decorator

    def register_lazy(self, name: str, target: str) -> None:
        """Register the object at import path ``target`` (``"pkg.module:attr"``) under ``name``, imported on first
        :meth:`get`."""
        self._add(name, _LazyEntry(target))

    def unregister(self, name: str) -> None:
        """Remove ``name`` (e.g. an entry a test registered)."""
        self.get(name)  # unknown names list the valid ones
        del self._items[name]

    def get(self, name: str) -> T:
        """Return the object registered as ``name``; unknown names list the valid ones."""
        try:
            obj = self._items[name]
        except (KeyError, TypeError):
            raise ValueError(f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names())}") from None
        if isinstance(obj, _LazyEntry):
            obj = self._items[name] = obj.resolve()
        return obj

    def names(self) -> list[str]:
        """All registered names and aliases, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
