"""Fault injection for the fault matrix's deployment only (on its PYTHONPATH, never installed):
a run worker that chunks a page containing ``KB_FAULT_NATIVE_CRASH_MARKER`` dies of a real
SIGSEGV, as a native library crashing on one document would, on every attempt.

No document of ours crashes the worker for real (the parsers, where native crashes happen, run
in a child process that turns a crash into a typed error: kb_platform/isolation.py), so this
is the one fault the matrix has to make."""

from __future__ import annotations

import faulthandler
import importlib.abc
import importlib.machinery
import os
import sys

MARKER = os.environ.get("KB_FAULT_NATIVE_CRASH_MARKER", "")
TARGET = "kb_platform.chunking"


def _crashing(chunk_pages):  # type: ignore[no-untyped-def]
    def wrapper(document, pages, *args, **kwargs):  # type: ignore[no-untyped-def]
        if any(MARKER in page.text for page in pages):
            faulthandler.disable()  # die quietly, like a real crash without a handler
            faulthandler._sigsegv()
        return chunk_pages(document, pages, *args, **kwargs)

    return wrapper


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
        if name != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module):  # type: ignore[no-untyped-def]
            original(module)
            module.chunk_pages = _crashing(module.chunk_pages)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if MARKER:
    sys.meta_path.insert(0, _PatchAfterImport())
