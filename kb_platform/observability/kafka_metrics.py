"""Ingestion metrics from Kafka and the ledger, brought up to date at each scrape: per ingest
topic-partition the end and committed offsets and the lag in messages; per ingest topic the lag
in seconds (the age of the oldest unsettled message, as kafka-lag-exporter estimates it, but
from the ledger, so a message counts as waiting until it is indexed, dead-lettered or parked)
and how many messages are in each ledger state; per dead-letter topic the letters by error class
and the age of the oldest letter whose document is still dead-lettered. A scrape looks only at
what may have changed since the last (``IncrementalAudit``, ``LetterLog``), so its cost follows
the unsettled messages and new letters, not everything the topics retain.

A scrape that cannot reach the broker answers ``kb_kafka_up 0`` instead of failing, so the
exporter's other metrics (and the alert on Kafka being down) still arrive.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator

from confluent_kafka import Consumer, KafkaException
from dagster import DagsterInstance
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from kb_platform.kafka import ledger
from kb_platform.kafka.audit import IncrementalAudit, PartitionAudit
from kb_platform.kafka.lag import oldest_of
from kb_platform.kafka.ledger import MessageState
from kb_platform.kafka.topics import Topics
from kb_platform.observability.letter_log import Letter, LetterLog

log = logging.getLogger(__name__)


def still_dead_lettered(
    instance: DagsterInstance, ledger_audit: IncrementalAudit, letters: list[Letter]
) -> set[tuple[str, int, int]]:
    """The letters' sources that neither a later run indexed nor the replays parked: their
    states from the audit just made, looked up only for sources it does not cover (a letter
    whose ingest message retention has deleted)."""
    waiting = set()
    elsewhere: dict[tuple[str, int], set[int]] = collections.defaultdict(set)
    for letter in letters:
        topic, partition, offset = letter.source
        if offset < 0:
            continue
        state = ledger_audit.state(topic, partition, offset)
        if state is None:
            elsewhere[(topic, partition)].add(offset)
        elif state is MessageState.DEAD_LETTERED:
            waiting.add(letter.source)
    for (topic, partition), offsets in elsewhere.items():
        span = sorted(offsets)
        states = ledger.classify(instance, topic, partition, span, read_until=span[-1] + 1)
        waiting |= {(topic, partition, o) for o in span if states[o] is MessageState.DEAD_LETTERED}
    return waiting


class KafkaMetrics(Collector):
    """A Prometheus collector over the ingest and dead-letter topics and the ledger."""

    def __init__(
        self,
        instance: DagsterInstance,
        topics: Topics,
        group_consumer: Callable[[], Consumer],
        reader: Callable[[], Consumer],
    ) -> None:
        """``group_consumer``: a consumer of the ingest group (for its committed offsets);
        ``reader``: one that reports partition ends, for reading the dead letters."""
        self._instance = instance
        self._topics = topics
        self._group_consumer = group_consumer
        self._reader = reader
        self._lock = threading.Lock()
        self._ledger = IncrementalAudit(instance)  # scrapes look only at what may have moved
        self._letters = LetterLog()

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("kb_kafka_up", "Whether the last scrape could read Kafka")
        with self._lock:
            try:
                metrics = self._read()
            except (KafkaException, RuntimeError) as exc:
                log.warning("Kafka metrics unavailable: %s", exc)
                up.add_metric([], 0)
                yield up
                return
        up.add_metric([], 1)
        yield up
        yield from metrics

    def _read(self) -> list[Metric]:
        ingest, dlq = self._topics.all_ingest(), self._topics.all_dlq()
        group, reader = self._group_consumer(), self._reader()
        try:
            report = self._ledger.audit(group, ingest)
            # The audit found each partition's first unsettled message: its age is the lag.
            first: dict[str, list[tuple[str, int, int]]] = collections.defaultdict(list)
            for row in report:
                if row.first_unsettled is not None:
                    first[row.topic].append((row.topic, row.partition, row.first_unsettled))
            waiting = {t: oldest_of(group, first[t]) for t in ingest}
            letters = self._letters.refresh(reader, dlq)
        finally:
            group.close()
            reader.close()
        now = time.time()
        lag_seconds = GaugeMetricFamily(
            "kb_kafka_consumer_lag_seconds",
            "Seconds the oldest unsettled message of the topic has waited (0: none waits)",
            labels=["topic"],
        )
        for topic, oldest in waiting.items():
            lag_seconds.add_metric([topic], oldest.age_s(now) if oldest else 0.0)
        return [
            *self._offsets(report),
            lag_seconds,
            self._states(report),
            *self._dead_letters(letters, dlq, now),
        ]

    def _offsets(self, report: list[PartitionAudit]) -> list[Metric]:
        labels = ["topic", "partition"]
        end = GaugeMetricFamily("kb_kafka_end_offset", "Next offset to be written", labels=labels)
        committed = GaugeMetricFamily(
            "kb_kafka_committed_offset",
            "The ingest consumer group's committed offset (past settled work only)",
            labels=labels,
        )
        lag = GaugeMetricFamily(
            "kb_kafka_consumer_lag_messages",
            "Messages past the committed offset",
            labels=labels,
        )
        for row in report:
            where = [row.topic, str(row.partition)]
            end.add_metric(where, row.high)
            committed.add_metric(where, row.committed)
            lag.add_metric(where, row.lag)
        return [end, committed, lag]

    def _states(self, report: list[PartitionAudit]) -> Metric:
        states = GaugeMetricFamily(
            "kb_ingest_messages",
            "Ingest messages still on the topic, by where they stand (kb-platform audit)",
            labels=["topic", "state"],
        )
        totals: dict[tuple[str, MessageState], int] = collections.Counter()
        for row in report:
            for state in MessageState:
                totals[(row.topic, state)] += row.counts.get(state, 0)
        for (topic, state), count in sorted(totals.items()):
            states.add_metric([topic, state.value], count)
        return states

    def _dead_letters(self, letters: list[Letter], dlq: list[str], now: float) -> list[Metric]:
        by_class = GaugeMetricFamily(
            "kb_dlq_letters",
            "Letters on the dead-letter topic, by error class (replays add letters)",
            labels=["topic", "error_class"],
        )
        oldest_age = GaugeMetricFamily(
            "kb_dlq_oldest_letter_age_seconds",
            "Age of the oldest letter whose document is still dead-lettered (0: none)",
            labels=["topic"],
        )
        counts = collections.Counter((letter.topic, letter.error_class) for letter in letters)
        for (topic, error_class), count in sorted(counts.items()):
            by_class.add_metric([topic, error_class], count)
        depth = GaugeMetricFamily(
            "kb_dlq_depth",
            "Documents on the dead-letter topic still dead-lettered: neither indexed by a "
            "replay nor parked",
            labels=["topic"],
        )
        waiting = still_dead_lettered(self._instance, self._ledger, letters)
        for topic in dlq:
            open_letters = [
                letter for letter in letters if letter.topic == topic and letter.source in waiting
            ]
            depth.add_metric([topic], len({letter.source for letter in open_letters}))
            ages = [now - letter.produced_at for letter in open_letters]
            oldest_age.add_metric([topic], max(ages, default=0.0))
        return [by_class, depth, oldest_age]
