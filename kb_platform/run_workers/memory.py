"""Hands memory a finished run freed back to the system before the warm worker waits for the
next one.

glibc keeps what Python frees in its heaps and raises its mmap threshold after a large buffer
is freed (up to 32 MiB), so the renders and page bytes of one long document stay resident in
the worker after the run that needed them. ``malloc_trim`` returns those free pages; on a libc
without it (musl, macOS) this only collects garbage.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import lru_cache
from typing import Any

import psutil


@lru_cache(maxsize=1)
def _malloc_trim() -> Any | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    function = getattr(ctypes.CDLL(name), "malloc_trim", None)
    if function is not None:
        function.argtypes = [ctypes.c_size_t]
        function.restype = ctypes.c_int
    return function


def rss_bytes() -> int:
    return psutil.Process().memory_info().rss


def release_freed_memory() -> tuple[int, int]:
    """Collects garbage and trims the C heap; returns the resident bytes before and after."""
    before = rss_bytes()
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
    return before, rss_bytes()
