"""How busy the machine was while a benchmark ran: busy, iowait, idle and steal shares of all
cores, from the kernel's ``/proc/stat``.

Steal is the time the hypervisor gave this VM's virtual CPUs to someone else; on a shared
2-core VM it moves throughput numbers by 10-20 %, so every benchmark prints it beside them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

STAT = Path("/proc/stat")
FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


@dataclass(frozen=True)
class CpuTimes:
    """The aggregate ``cpu`` line of ``/proc/stat``, in clock ticks (guest time is already
    counted in user and nice, so it is left out of the total)."""

    user: int
    nice: int
    system: int
    idle: int
    iowait: int
    irq: int
    softirq: int
    steal: int

    @classmethod
    def parse(cls, stat_text: str) -> CpuTimes:
        for line in stat_text.splitlines():
            name, *values = line.split() or [""]
            if name != "cpu":
                continue
            if len(values) < len(FIELDS) or not all(v.isdigit() for v in values[: len(FIELDS)]):
                raise ValueError(f"unexpected /proc/stat cpu line: {line!r}")
            return cls(*(int(v) for v in values[: len(FIELDS)]))
        raise ValueError("/proc/stat has no aggregate cpu line")

    @classmethod
    def now(cls) -> CpuTimes:
        return cls.parse(STAT.read_text())

    @property
    def total(self) -> int:
        return sum(getattr(self, name) for name in FIELDS)


@dataclass(frozen=True)
class MachineLoad:
    """Shares (0-1) of all cores' time between two readings; they add up to 1."""

    busy: float  # user, nice, system, irq, softirq
    iowait: float
    idle: float
    steal: float
    seconds: float
    cores: int

    @classmethod
    def between(cls, before: CpuTimes, after: CpuTimes, seconds: float) -> MachineLoad:
        ticks = after.total - before.total
        if ticks <= 0:
            raise ValueError("the second reading is not later than the first")

        def share(*names: str) -> float:
            return sum(getattr(after, n) - getattr(before, n) for n in names) / ticks

        return cls(
            busy=share("user", "nice", "system", "irq", "softirq"),
            iowait=share("iowait"),
            idle=share("idle"),
            steal=share("steal"),
            seconds=seconds,
            cores=os.cpu_count() or 1,
        )

    def line(self) -> str:
        return (
            f"machine over {self.seconds:.0f} s ({self.cores} cores): busy {self.busy:.0%}, "
            f"steal {self.steal:.1%}, iowait {self.iowait:.1%}, idle {self.idle:.0%}"
        )


@contextmanager
def printed_machine_load() -> Iterator[None]:
    """Prints the machine's load over the ``with`` block when it ends (also when it fails)."""
    before, started = CpuTimes.now(), time.monotonic()
    try:
        yield
    finally:
        try:
            print(MachineLoad.between(before, CpuTimes.now(), time.monotonic() - started).line())
        except ValueError as exc:  # a block shorter than a clock tick
            print(f"machine load not measured: {exc}")
