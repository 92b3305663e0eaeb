"""The benchmarks' machine-load line (benchmarks/machine_load.py, a script folder, loaded by
path as the benchmarks themselves find it)."""

import importlib.util
import sys
import time
from types import ModuleType

import pytest

from kb_platform.config import REPO_ROOT


@pytest.fixture(scope="module")
def machine_load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "machine_load", REPO_ROOT / "benchmarks" / "machine_load.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["machine_load"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_shares_of_a_busy_interval_add_up_and_show_the_work(machine_load: ModuleType) -> None:
    before = machine_load.CpuTimes.now()
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:  # this process keeps one core busy
        pass
    load = machine_load.MachineLoad.between(before, machine_load.CpuTimes.now(), 0.5)
    shares = (load.busy, load.iowait, load.idle, load.steal)
    assert all(0.0 <= share <= 1.0 for share in shares)
    assert sum(shares) == pytest.approx(1.0)
    assert load.busy > 0.0
    assert "steal" in load.line()


def test_steal_is_the_hypervisors_share_of_the_ticks(machine_load: ModuleType) -> None:
    before = machine_load.CpuTimes.parse("cpu  100 0 50 800 10 0 0 40 7 0\ncpu0 1 2 3 4 5 6 7 8")
    after = machine_load.CpuTimes.parse("cpu  200 0 100 1600 20 0 0 80 9 0\ncpu0 1 2 3 4 5 6 7 8")
    load = machine_load.MachineLoad.between(before, after, 10.0)
    assert load.steal == pytest.approx(40 / 1000)  # guest time (7 → 9) is already in user
    assert load.busy == pytest.approx(150 / 1000)
    assert load.idle == pytest.approx(800 / 1000)


@pytest.mark.parametrize(
    "stat_text",
    ["", "cpu0 1 2 3 4 5 6 7 8", "cpu  1 2 3", "cpu  1 2 3 4 5 6 7 x", "intr 1 2 3 4 5 6 7 8"],
)
def test_a_stat_without_a_whole_cpu_line_is_rejected(
    machine_load: ModuleType, stat_text: str
) -> None:
    with pytest.raises(ValueError, match="cpu"):
        machine_load.CpuTimes.parse(stat_text)


def test_readings_out_of_order_are_rejected(machine_load: ModuleType) -> None:
    reading = machine_load.CpuTimes.parse("cpu  1 2 3 4 5 6 7 8")
    with pytest.raises(ValueError, match="not later"):
        machine_load.MachineLoad.between(reading, reading, 1.0)


def test_the_block_prints_its_load_even_when_it_fails(
    machine_load: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(RuntimeError), machine_load.printed_machine_load():
        time.sleep(0.3)
        raise RuntimeError("benchmark failed")
    assert "machine over" in capsys.readouterr().out
