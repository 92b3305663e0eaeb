"""A warm run worker hands memory its run freed back to the system (run_workers/memory.py):
freed heap memory that glibc would keep resident is released by the trim after each run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kb_platform.run_workers.memory import _malloc_trim, release_freed_memory

# 3,000 blocks of 64 KiB (under glibc's mmap threshold, so on the heap), every 64th kept so the
# heap's top cannot shrink by itself: ~190 MiB freed in holes that stay resident without a trim.
FRAGMENTED_HEAP = """
import json
from kb_platform.run_workers.memory import release_freed_memory
blocks = [b"x" * 65536 for _ in range(3000)]
kept = blocks[::64]
del blocks
before, after = release_freed_memory()
print(json.dumps({"before": before, "after": after, "kept": len(kept)}))
"""


@pytest.mark.skipif(_malloc_trim() is None, reason="this libc has no malloc_trim")
def test_freed_heap_memory_goes_back_to_the_system() -> None:
    result = subprocess.run(
        [sys.executable, "-c", FRAGMENTED_HEAP], capture_output=True, text=True, check=True
    )
    rss = json.loads(result.stdout)
    assert rss["before"] - rss["after"] > 120 << 20, rss


def test_release_reports_resident_bytes_before_and_after() -> None:
    before, after = release_freed_memory()
    assert before > 0 and after > 0
