"""Give the server's freed memory back to the OS after a large answer.

A large ``/retrieve`` answer builds hundreds of MB of short-lived objects (hits, the encoded body). Python frees
them, but glibc keeps the freed heap pages mapped, so the server's RSS stayed near the request's peak. glibc's
``malloc_trim(0)`` returns free pages of every arena to the OS (``madvise``), which brings RSS back near its
baseline; it is called only after large answers (it walks the heap: a few ms).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

TRIM_AFTER_BYTES = 4 * 2**20
"""Answers at least this large are followed by :func:`release_free_memory`."""


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to call
        return None


def release_free_memory() -> bool:
    """``malloc_trim(0)``; True when glibc released something, False when nothing was released or unavailable."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
