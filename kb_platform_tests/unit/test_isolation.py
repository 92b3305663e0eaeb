import os
import signal
import subprocess
import sys
import time

import pytest

from kb_platform.errors import Corrupt, Timeout, TooLarge
from kb_platform.isolation import run_isolated


def _sleep(seconds: float) -> str:
    time.sleep(seconds)
    return "done"


def _crash() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)  # what a native parser crash looks like


def _raise_typed() -> None:
    raise TooLarge("too many pages")


def _raise_other() -> None:
    raise KeyError("no relationship")


def test_returns_the_result() -> None:
    assert run_isolated(_sleep, 0, timeout_s=30, what="nap") == "done"


def test_timeout_kills_the_child() -> None:
    started = time.monotonic()
    with pytest.raises(Timeout, match="nap took longer than 1s"):
        run_isolated(_sleep, 60, timeout_s=1, what="nap")
    assert time.monotonic() - started < 10


def test_native_crash_becomes_corrupt() -> None:
    with pytest.raises(Corrupt, match="crashed"):
        run_isolated(_crash, timeout_s=30, what="parse")


def test_typed_errors_pass_through_and_others_become_corrupt() -> None:
    with pytest.raises(TooLarge):
        run_isolated(_raise_typed, timeout_s=30, what="parse")
    with pytest.raises(Corrupt, match="KeyError"):
        run_isolated(_raise_other, timeout_s=30, what="parse")


def test_children_do_not_rerun_the_main_script(tmp_path) -> None:
    # multiprocessing re-runs the parent's main script in each child unless told otherwise;
    # a script that imports Dagster would then pay seconds per parse.
    marker = tmp_path / "imports.log"
    script = tmp_path / "script.py"
    script.write_text(
        "import os\n"
        f"open({str(marker)!r}, 'a').write(f'{{os.getpid()}}\\n')\n"
        "from kb_platform.isolation import run_isolated\n"
        "if __name__ == '__main__':\n"
        "    for _ in range(3):\n"
        "        assert run_isolated(os.getpid, timeout_s=60, what='pid') != os.getpid()\n"
    )
    subprocess.run([sys.executable, str(script)], check=True, timeout=120)
    assert len(marker.read_text().splitlines()) == 1
