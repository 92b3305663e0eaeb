"""Leak checks from resident-memory samples: the slope of RSS against work done (requests
served, documents ingested), not against wall-clock time, so a slow machine reads the same.

A process that allocates while it warms (model arenas, caches filling to their bound, the
allocator's pools) grows early and levels off; a leak keeps growing at the same rate. The slope
is fitted by least squares over the second half of the samples after warm-up, and growth is a
leak when that slope passes the limit."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024
MIN_SAMPLES = 4


@dataclass(frozen=True)
class Growth:
    process: str
    unit: str  # what ``slope_mib`` is per: "1,000 requests", "100 documents"
    samples: int
    first_mib: float
    last_mib: float
    slope_mib: float  # MiB per unit over the second half of the samples
    limit_mib: float

    @property
    def leaking(self) -> bool:
        return self.slope_mib > self.limit_mib

    def row(self) -> str:
        verdict = "LEAK" if self.leaking else "ok"
        return (
            f"| {self.process} | {self.samples} | {self.first_mib:.0f} | {self.last_mib:.0f} | "
            f"{self.slope_mib:+.2f} MiB per {self.unit} (limit {self.limit_mib:g}) | {verdict} |"
        )


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys on xs."""
    n = len(xs)
    if n < 2 or len(ys) != n:
        raise ValueError(f"a slope needs two or more (x, y) pairs, got {n} xs and {len(ys)} ys")
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        raise ValueError("every sample was taken after the same amount of work")
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


def growth(
    process: str,
    work: list[float],
    rss_bytes: list[int],
    *,
    per: float,
    unit: str,
    limit_mib: float,
) -> Growth:
    """``rss_bytes[i]`` sampled after ``work[i]`` units of work (the first sample after warm-up);
    the slope in MiB per ``per`` units of work."""
    if len(work) < MIN_SAMPLES:
        raise ValueError(f"{process}: {len(work)} samples; a leak check needs {MIN_SAMPLES}")
    half = len(work) // 2
    tail_x, tail_y = work[half:], [b / MIB for b in rss_bytes[half:]]
    if len(tail_x) < 2:
        tail_x, tail_y = work, [b / MIB for b in rss_bytes]
    return Growth(
        process=process,
        unit=unit,
        samples=len(work),
        first_mib=rss_bytes[0] / MIB,
        last_mib=rss_bytes[-1] / MIB,
        slope_mib=slope(tail_x, tail_y) * per,
        limit_mib=limit_mib,
    )


HEADER = (
    "| process | samples | first MiB | last MiB | growth (second half) | verdict |\n"
    "|---|---|---|---|---|---|"
)
