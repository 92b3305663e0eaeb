"""The soak benchmark's leak verdict (kb_platform.observability.memory_growth): a steady leak is
caught, warm-up growth that levels off and sampling noise are not."""

from __future__ import annotations

import random

import pytest

from kb_platform.observability.memory_growth import MIB, growth, slope

REQUESTS = [float(n * 2000) for n in range(10)]  # a sample every 2,000 requests


def _check(rss: list[float]):
    return growth(
        "rag", REQUESTS, [int(r * MIB) for r in rss], per=1000, unit="1,000 requests", limit_mib=2
    )


def test_a_steady_leak_is_caught() -> None:
    noise = random.Random(7)
    leaking = _check([500 + 0.01 * x + noise.uniform(-3, 3) for x in REQUESTS])  # 10 MiB/1,000
    assert leaking.leaking and 6 < leaking.slope_mib < 14, leaking


def test_warm_up_that_levels_off_and_noise_are_not_leaks() -> None:
    noise = random.Random(11)
    warm = [500 + min(x, 6000) * 0.02 + noise.uniform(-3, 3) for x in REQUESTS]
    assert not _check(warm).leaking, _check(warm)
    flat = [800 + noise.uniform(-5, 5) for _ in REQUESTS]
    assert not _check(flat).leaking, _check(flat)


def test_too_few_samples_or_no_spread_is_an_error() -> None:
    with pytest.raises(ValueError, match="needs 4"):
        growth("rag", [1.0, 2.0], [1, 2], per=1, unit="x", limit_mib=1)
    with pytest.raises(ValueError, match="same amount of work"):
        slope([1.0, 1.0], [1.0, 2.0])
