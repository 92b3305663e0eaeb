"""How busy the machine was while a benchmark ran: busy, iowait, idle and steal shares of all
cores, from ``psutil.cpu_times()`` (the kernel's ``/proc/stat`` on Linux).

Steal is the time the hypervisor gave this VM's virtual CPUs to someone else; on a shared
2-core VM it moves throughput numbers by 10-20 %, so every benchmark prints it beside them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psutil

BUSY = ("user", "nice", "system", "irq", "softirq")
# guest time is already counted in user and nice (psutil's docs), so it stays out of the total
COUNTED = (*BUSY, "idle", "iowait", "steal")


@dataclass(frozen=True)
class MachineLoad:
    """Shares (0-1) of all cores' time between two ``psutil.cpu_times()`` readings; they add
    up to 1."""

    busy: float
    iowait: float
    idle: float
    steal: float
    seconds: float
    cores: int

    @classmethod
    def between(cls, before: Any, after: Any, seconds: float) -> MachineLoad:
        spent = {name: getattr(after, name, 0.0) - getattr(before, name, 0.0) for name in COUNTED}
        total = sum(spent.values())
        if total <= 0:
            raise ValueError("the second reading is not later than the first")
        return cls(
            busy=sum(spent[name] for name in BUSY) / total,
            iowait=spent["iowait"] / total,
            idle=spent["idle"] / total,
            steal=spent["steal"] / total,
            seconds=seconds,
            cores=psutil.cpu_count() or 1,
        )

    def line(self) -> str:
        return (
            f"machine over {self.seconds:.0f} s ({self.cores} cores): busy {self.busy:.0%}, "
            f"steal {self.steal:.1%}, iowait {self.iowait:.1%}, idle {self.idle:.0%}"
        )


@contextmanager
def printed_machine_load() -> Iterator[None]:
    """Prints the machine's load over the ``with`` block when it ends (also when it fails)."""
    before, started = psutil.cpu_times(), time.monotonic()
    try:
        yield
    finally:
        try:
            load = MachineLoad.between(before, psutil.cpu_times(), time.monotonic() - started)
            print(load.line())
        except ValueError as exc:  # a block shorter than a clock tick
            print(f"machine load not measured: {exc}")
