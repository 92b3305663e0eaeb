"""The ingest lease: one code location reads the ingest topics at a time."""

from __future__ import annotations

import threading

from dagster import DagsterInstance

from kb_platform.kafka import ingest_lease


def test_the_holder_renews_and_another_location_waits_until_it_lapses() -> None:
    with DagsterInstance.local_temp() as instance:
        assert ingest_lease.acquire(instance, "blue", ttl_s=60, now=1000).holder == "blue"
        refused = ingest_lease.acquire(instance, "green", ttl_s=60, now=1030)
        assert (refused.holder, refused.until) == ("blue", 1060)
        assert ingest_lease.acquire(instance, "blue", ttl_s=60, now=1050).until == 1110
        assert ingest_lease.acquire(instance, "green", ttl_s=60, now=1100).holder == "blue"
        # blue stopped renewing (removed in the switch): green takes over after the lease ends
        assert ingest_lease.acquire(instance, "green", ttl_s=60, now=1111).holder == "green"
        assert ingest_lease.acquire(instance, "blue", ttl_s=60, now=1112).holder == "green"


def test_of_locations_racing_for_a_lapsed_lease_exactly_one_gets_it() -> None:
    with DagsterInstance.local_temp() as instance:
        ingest_lease.acquire(instance, "old", ttl_s=1, now=0)
        for round_ in range(5):
            now = 100.0 * (round_ + 1)
            results: dict[str, str] = {}
            start = threading.Barrier(6)

            def race(
                holder: str, now: float, start: threading.Barrier, results: dict[str, str]
            ) -> None:
                start.wait()
                results[holder] = ingest_lease.acquire(instance, holder, ttl_s=50, now=now).holder

            threads = [
                threading.Thread(target=race, args=(f"loc{i}", now, start, results))
                for i in range(6)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            winners = set(results.values())
            assert len(winners) == 1, results  # every location sees the same single holder
            assert ingest_lease.current(instance).holder in winners
