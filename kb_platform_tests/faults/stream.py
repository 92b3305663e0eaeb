"""A stream of new documents produced while a fault happens, and what became of each message:
indexed, dead-lettered, lost, duplicated chunks, and the time from the fault cleared to
nothing left unsettled (the consumer lag of kb_platform.kafka.lag back to 0)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Producer
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from elasticsearch import Elasticsearch

from kb_platform.contracts import compute_doc_id
from kb_platform.defs.reliability.failed_runs import ADOPTED_FROM_TAG
from kb_platform.kafka import ledger
from kb_platform.kafka.lag import oldest_unsettled
from kb_platform.kafka.ledger import MessageState, source_key
from kb_platform.resources.kafka import KafkaResource
from kb_platform.runs import failure_details
from kb_platform_tests.integration.kafka_helpers import message

SETTLE_POLL_S = 2.0


@dataclass(frozen=True)
class Sent:
    topic: str
    partition: int
    offset: int
    doc_id: str

    @property
    def source(self) -> str:
        return source_key(self.topic, self.partition, self.offset)


@dataclass
class DocumentStream:
    """``count`` new text documents (unique content, so one doc_id each), one every
    ``interval_s``, produced from a thread round-robin over the topic's partitions as they are
    when each message is sent (partitions added meanwhile get messages too)."""

    kafka: KafkaResource
    topic: str
    folder: Path
    name: str
    body: str
    count: int
    interval_s: float
    poison: dict[int, str] = field(default_factory=dict)  # index -> extra text of that document
    sent: list[Sent] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._produce, name=f"stream-{self.name}")
        self._thread.start()

    def _produce(self) -> None:
        producer: Producer = self.kafka.producer()
        for i in range(self.count):
            path = self.folder / f"{self.name}-{i:03d}.txt"
            text = f"{self.name} document {i}.\n\n{self.body}\n{self.poison.get(i, '')}"
            path.write_text(text)
            doc_id = compute_doc_id(path.read_bytes())
            metadata = producer.list_topics(self.topic, timeout=30).topics[self.topic]
            partition = i % len(metadata.partitions)

            def delivered(error, msg, doc_id: str = doc_id) -> None:  # type: ignore[no-untyped-def]
                if error is not None:
                    self.errors.append(str(error))
                else:
                    self.sent.append(Sent(msg.topic(), msg.partition(), msg.offset(), doc_id))

            producer.produce(
                self.topic,
                key=path.name.encode(),
                value=message(path, "text"),
                partition=partition,
                on_delivery=delivered,
            )
            producer.poll(0)
            time.sleep(self.interval_s)
        left = producer.flush(240)  # through a broker restart: the producer retries
        if left:
            self.errors.append(f"{left} messages never confirmed")

    def wait_sent(self, n: int, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.sent) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: {len(self.sent)} of {n} messages confirmed")
            time.sleep(0.2)

    def join(self) -> None:
        assert self._thread is not None
        self._thread.join(timeout=600)
        assert not self.errors, self.errors
        assert len(self.sent) == self.count, f"{len(self.sent)} of {self.count} confirmed"


def runs_of(instance: DagsterInstance, sent: list[Sent]) -> list:
    return instance.get_runs(RunsFilter(tags={"kb/source": [s.source for s in sent]}))


def wait_for_a_running_run(
    instance: DagsterInstance, stream: DocumentStream, timeout_s: float = 300
) -> None:
    """Until one of the stream's runs is executing: the fault then hits work in flight."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if stream.sent and any(
            r.status is DagsterRunStatus.STARTED for r in runs_of(instance, list(stream.sent))
        ):
            return
        time.sleep(0.5)
    raise AssertionError(f"{stream.name}: no run started within {timeout_s:.0f} s")


def wait_settled(
    instance: DagsterInstance, kafka: KafkaResource, stream: DocumentStream, timeout_s: float
) -> float:
    """Seconds until every message on the ingest topics is settled (none waiting: consumer lag
    0) and each of the stream's messages is in the ledger; raises after ``timeout_s``."""
    started = time.monotonic()
    consumer = kafka.consumer(f"{kafka.consumer_group}-matrix")
    try:
        while True:
            waiting = None
            try:
                waiting = oldest_unsettled(consumer, instance, kafka.topics().all_ingest())
                states = message_states(instance, stream.sent)
            except Exception as exc:  # a service of the fault still coming back
                waiting, states = exc, {}
            if waiting is None and all(s in ledger.SETTLED for s in states.values()) and states:
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                raise AssertionError(
                    f"{stream.name}: not settled after {timeout_s:.0f} s: {waiting}"
                )
            time.sleep(SETTLE_POLL_S)
    finally:
        consumer.close()


def message_states(instance: DagsterInstance, sent: list[Sent]) -> dict[str, MessageState]:
    states: dict[str, MessageState] = {}
    by_partition: dict[tuple[str, int], list[int]] = {}
    for s in sent:
        by_partition.setdefault((s.topic, s.partition), []).append(s.offset)
    for (topic, partition), offsets in by_partition.items():
        read_until = ledger.read_position(instance, topic, partition)
        found = ledger.classify(instance, topic, partition, sorted(offsets), read_until)
        states |= {source_key(topic, partition, o): st for o, st in found.items()}
    return states


@dataclass(frozen=True)
class Outcome:
    fault: str
    produced: int
    indexed: int
    dead_lettered: int
    lost: int
    duplicated_chunks: int
    reprocessed: int  # messages with more than one successful run
    adopted: int  # failed runs nobody settled that adopt_orphaned_runs requested again
    recovery_s: float
    detail: tuple[str, ...] = ()  # the runs of reprocessed messages, for a failing assertion

    def row(self) -> str:
        return (
            f"{self.fault:<34} {self.produced:>8} {self.indexed:>7} {self.dead_lettered:>5} "
            f"{self.lost:>4} {self.duplicated_chunks:>10} {self.reprocessed:>11} "
            f"{self.adopted:>7} {self.recovery_s:>10.1f}"
        )

    def report(self) -> str:
        """The row and the runs behind it, whole (pytest shortens a long repr in an assertion)."""
        return "\n".join([self.header(), self.row(), *self.detail])

    @staticmethod
    def header() -> str:
        return (
            f"{'fault':<34} {'produced':>8} {'indexed':>7} {'dlq':>5} {'lost':>4} "
            f"{'dup chunks':>10} {'reprocessed':>11} {'adopted':>7} {'recovery s':>10}"
        )


def outcome(
    fault: str,
    instance: DagsterInstance,
    es: Elasticsearch,
    alias: str,
    stream: DocumentStream,
    recovery_s: float,
) -> Outcome:
    states = message_states(instance, stream.sent)
    indexed = [s for s in stream.sent if states.get(s.source) is MessageState.INDEXED]
    dead = [
        s
        for s in stream.sent
        if states.get(s.source) in (MessageState.DEAD_LETTERED, MessageState.PARKED)
    ]
    es.indices.refresh(index=alias)
    doc_ids = [s.doc_id for s in indexed]
    found = es.search(
        index=alias,
        size=0,
        query={"terms": {"doc_id": doc_ids}},
        aggs={
            "docs": {"terms": {"field": "doc_id", "size": max(len(doc_ids), 1)}},
            "dups": {"terms": {"field": "chunk_id", "min_doc_count": 2, "size": 100}},
        },
    )
    with_chunks = {b["key"] for b in found["aggregations"]["docs"]["buckets"]}
    in_index = [s for s in indexed if s.doc_id in with_chunks]  # indexed per ledger and in ES
    runs = runs_of(instance, stream.sent)
    successes = Counter(r.tags["kb/source"] for r in runs if r.status is DagsterRunStatus.SUCCESS)
    twice = {source for source, n in successes.items() if n > 1}
    noted = twice | {s.source for s in dead}
    detail = tuple(
        f"{r.tags['kb/source']} {r.run_id[:8]} {r.status.value} "
        + " ".join(f"{k}={v}" for k, v in sorted(r.tags.items()) if k.startswith("dagster/"))
        + f" {failure_details(instance, r.run_id) or ''}"
        for r in runs
        if r.tags["kb/source"] in noted
    )
    return Outcome(
        fault=fault,
        produced=stream.count,
        indexed=len(in_index),
        dead_lettered=len(dead),
        lost=stream.count - len(in_index) - len(dead),
        duplicated_chunks=len(found["aggregations"]["dups"]["buckets"]),
        reprocessed=len(twice),
        adopted=sum(ADOPTED_FROM_TAG in r.tags for r in runs),
        recovery_s=recovery_s,
        detail=detail,
    )
