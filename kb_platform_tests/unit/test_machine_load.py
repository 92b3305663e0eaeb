"""The benchmarks' machine-load line (benchmarks/machine_load.py, a script folder, loaded by
path as the benchmarks themselves find it)."""

import importlib.util
import sys
import time
from types import ModuleType, SimpleNamespace

import psutil
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
    before = psutil.cpu_times()
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:  # this process keeps one core busy
        pass
    load = machine_load.MachineLoad.between(before, psutil.cpu_times(), 0.5)
    shares = (load.busy, load.iowait, load.idle, load.steal)
    assert all(0.0 <= share <= 1.0 for share in shares)
    assert sum(shares) == pytest.approx(1.0)
    assert load.busy > 0.0
    assert "steal" in load.line()


def reading(**seconds: float) -> SimpleNamespace:
    fields = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest")
    return SimpleNamespace(**{name: seconds.get(name, 0.0) for name in fields})


def test_steal_is_the_hypervisors_share_of_the_time(machine_load: ModuleType) -> None:
    before = reading(user=100, system=50, idle=800, iowait=10, steal=40, guest=7)
    after = reading(user=200, system=100, idle=1600, iowait=20, steal=80, guest=9)
    load = machine_load.MachineLoad.between(before, after, 10.0)
    assert load.steal == pytest.approx(40 / 1000)  # guest time (7 → 9) is already in user
    assert load.busy == pytest.approx(150 / 1000)
    assert load.idle == pytest.approx(800 / 1000)


def test_readings_out_of_order_are_rejected(machine_load: ModuleType) -> None:
    later, earlier = reading(user=10, idle=10), reading(user=5, idle=5)
    with pytest.raises(ValueError, match="not later"):
        machine_load.MachineLoad.between(later, earlier, 1.0)
    with pytest.raises(ValueError, match="not later"):
        machine_load.MachineLoad.between(later, later, 1.0)


def test_the_block_prints_its_load_even_when_it_fails(
    machine_load: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(RuntimeError), machine_load.printed_machine_load():
        time.sleep(0.3)
        raise RuntimeError("benchmark failed")
    assert "machine over" in capsys.readouterr().out
