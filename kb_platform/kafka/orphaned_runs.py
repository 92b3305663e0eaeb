"""Failed document runs that nothing will settle: the newest run of a message still in flight
failed, carries no dead letter, and no retry is coming for it.

Dagster's run-failure sensors see the runs of their own code location only, and its retry
daemon makes a retry in the failed run's location: when that location was removed (the old
side of a blue/green switch) or the retry could not be made (the daemon then tags the run
``dagster/will_retry=false`` after its failure was evaluated), the message would wait forever
and hold back its partition's committed offset.
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter

from kb_platform.kafka import ledger
from kb_platform.kafka.ingest_reader import topic_partitions
from kb_platform.kafka.ledger import SETTLED_RUN_TAG, MessageState


def unsettled_failure(run: DagsterRun) -> bool:
    """Failed, not dead-lettered, and not waiting for Dagster's retry (a canceled run is an
    operator's decision: it stays in flight until they run the document again)."""
    return (
        run.status is DagsterRunStatus.FAILURE
        and run.tags.get(SETTLED_RUN_TAG) != "true"
        and run.tags.get("dagster/will_retry") != "true"
    )


def orphaned_runs(
    instance: DagsterInstance,
    consumer: Consumer,
    topics: list[str],
    grace_s: float,
    now: float | None = None,
) -> list[DagsterRun]:
    """The newest runs of in-flight messages (between each partition's committed offset and the
    ingest sensor's position) that are unsettled failures and ended more than ``grace_s`` ago:
    time for their own location's failure sensor and Dagster's retry daemon to have acted."""
    now = time.time() if now is None else now
    partitions = topic_partitions(consumer, topics)
    candidates: list[DagsterRun] = []
    for tp in consumer.committed(partitions, timeout=10) if partitions else []:
        start = max(tp.offset, 0)
        read_until = ledger.read_position(instance, tp.topic, tp.partition)
        scan = range(start, min(read_until, start + ledger.MAX_SCAN))
        if not scan:
            continue
        runs = ledger.source_runs(instance, tp.topic, tp.partition, scan)
        states = ledger.classify(instance, tp.topic, tp.partition, scan, read_until, runs)
        newest: dict[int, DagsterRun] = {}
        for run in runs:  # each offset's newest first
            newest.setdefault(int(run.tags["kb/source-offset"]), run)
        candidates += [
            run
            for offset, run in newest.items()
            if states.get(offset) is MessageState.IN_FLIGHT and unsettled_failure(run)
        ]
    if not candidates:
        return []
    records = instance.get_run_records(RunsFilter(run_ids=[r.run_id for r in candidates]))
    ended = {r.dagster_run.run_id: r.end_time or r.update_timestamp.timestamp() for r in records}
    return [r for r in candidates if ended.get(r.run_id, now) <= now - grace_s]
