"""Runs untrusted-input work in a child process that can be killed.

Parsers of hostile files can hang inside C code, where no Python-level timeout reaches, or
crash the interpreter outright. Running them in a child process makes the time limit real
(the child is killed) and turns a crash into a typed error instead of a dead worker.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import sys
import threading
import traceback
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from kb_platform.errors import Corrupt, KbError, Timeout

log = logging.getLogger(__name__)
T = TypeVar("T")

# Modules every child needs, imported once in the fork server rather than in each child.
_PRELOAD = ["kb_platform.extraction"]
_context: Any = None
_start_lock = threading.Lock()


def _mp_context() -> Any:
    global _context
    if _context is None:
        _context = mp.get_context("forkserver")
        _context.set_forkserver_preload(_PRELOAD)
    return _context


@contextmanager
def _children_skip_main() -> Iterator[None]:
    """Starts children that do not re-run the parent's main script.

    multiprocessing re-executes the parent's ``__main__`` in every child it starts, so that
    objects defined there can be unpickled. A script that imports Dagster and the code location
    (a benchmark, the ``kb-platform`` console script) then costs each parse seconds. Everything
    isolated here lives in importable modules, so the child is given no main to re-run.
    """
    with _start_lock:
        main = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            sys.modules["__main__"] = main


def _child(conn: Connection, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    try:
        conn.send(("ok", fn(*args, **kwargs)))
    except KbError as exc:
        conn.send(("kb_error", exc))
    except BaseException as exc:
        conn.send(("error", (type(exc).__name__, str(exc), traceback.format_exc())))
    finally:
        conn.close()


def run_isolated(fn: Callable[..., T], *args: Any, timeout_s: float, what: str, **kwargs: Any) -> T:
    """Calls ``fn(*args, **kwargs)`` in a child process and returns its result.

    Raises ``Timeout`` when it runs past ``timeout_s`` (the child is killed), the child's own
    ``KbError`` when it raised one, and ``Corrupt`` when the parser raised anything else or the
    child died (a crash in native code on a malformed file).
    """
    ctx = _mp_context()
    parent_conn, child_conn = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(child_conn, fn, args, kwargs), daemon=True)
    with _children_skip_main():
        process.start()
    child_conn.close()
    try:
        if not parent_conn.poll(timeout_s):
            raise Timeout(f"{what} took longer than {timeout_s:g}s and was stopped")
        try:
            status, payload = parent_conn.recv()
        except EOFError:
            process.join(5)
            raise Corrupt(
                f"{what} crashed the parser process (exit code {process.exitcode})"
            ) from None
    finally:
        if process.is_alive():
            process.kill()
        process.join(5)
        parent_conn.close()
    if status == "ok":
        return payload
    if status == "kb_error":
        raise payload
    name, message, trace = payload
    log.debug("%s failed in the child process:\n%s", what, trace)
    raise Corrupt(f"{what} failed: {name}: {message}")


def start_fork_server() -> None:
    """Starts the fork server (and its preloaded parsers) now rather than in the first call
    that needs it: a warm run worker does this before its first run."""
    run_isolated(int, timeout_s=120, what="fork server warm-up")
