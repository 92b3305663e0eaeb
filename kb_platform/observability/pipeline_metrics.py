"""Pipeline metrics from the Dagster instance: per asset and modality, the seconds each step
took, step failures by error class, timeouts, retries, and dead-letter replays.

Run processes come and go (a warm worker here, a pod per run on Kubernetes), and a process
that exits between two scrapes would take its in-memory counters with it; the instance outlives
every run, so an exporter that reads it loses nothing a run did and needs nothing pushed from
the runs. Each scrape reads the event logs of the runs that finished since the previous one
(one run's log is one read, also on the run-sharded SQLite storage, where a query across all
runs' events opens every shard), so a run is counted once, when it ends. Where it stopped is kept
in the instance: a restarted exporter starts its counters at 0 (a counter reset, which rate()
handles) and counts on from there.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter
from dagster._core.storage.dagster_run import RunRecord
from prometheus_client import Counter, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from kb_platform.errors import Timeout
from kb_platform.kafka.topics import Topics
from kb_platform.runs import JOB, TERMINAL, step_failure_details

# Steps take from milliseconds (a chunker) to minutes (OCR of a long scan; the limits are 1-5 min).
PROCESSING_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 180.0, 300.0)
# A document's run, start to end, against limits of 60-300 s per modality.
DOCUMENT_BUCKETS = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0)
RUNS_PER_SCRAPE = 100  # a scrape reads each run's events: ~30 ms a run on SQLite here
LOOKBACK = timedelta(hours=1)
RESUME_KEY = "kb/exporter/runs-updated-after"
REMEMBERED_RUNS = 10_000  # run ids kept to count a run once when its record changes again
NO_MODALITY = "none"  # steps of runs that process no document (training, index roll-outs)
OVERLAP = timedelta(milliseconds=1)
_STEP_EVENTS = {
    DagsterEventType.STEP_SUCCESS,
    DagsterEventType.STEP_FAILURE,
    DagsterEventType.STEP_UP_FOR_RETRY,
}


class PipelineMetrics(Collector):
    """A Prometheus collector that reads the runs finished since its last scrape."""

    def __init__(self, instance: DagsterInstance, topics: Topics) -> None:
        self._instance = instance
        self._topics = topics
        self._updated_after: datetime | None = None
        self._counted: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        labels = ["asset", "modality"]
        self.processing_seconds = Histogram(
            "kb_asset_processing_seconds",
            "Seconds a successful step took, per asset and document modality",
            labels,
            buckets=PROCESSING_BUCKETS,
            registry=None,
        )
        self.documents = Counter(
            "kb_documents_processed",
            "Document runs that ended, by outcome (a run retried counts once per run)",
            ["modality", "outcome"],
            registry=None,
        )
        self.document_seconds = Histogram(
            "kb_document_processing_seconds",
            "Seconds a document's run took, start to end, per modality",
            ["modality"],
            buckets=DOCUMENT_BUCKETS,
            registry=None,
        )
        self.step_failures = Counter(
            "kb_step_failures",
            "Steps that failed, by error class (a retried step counts once per failure)",
            [*labels, "error_class"],
            registry=None,
        )
        self.timeouts = Counter(
            "kb_step_timeouts",
            "Steps stopped at their modality's time limit",
            labels,
            registry=None,
        )
        self.retries = Counter(
            "kb_step_retries", "Steps that failed and will be retried", labels, registry=None
        )
        self.replays = Counter(
            "kb_dlq_replays",
            "Runs started again for a dead-lettered document",
            ["modality"],
            registry=None,
        )

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            self.update()
            for metric in (
                self.documents,
                self.document_seconds,
                self.processing_seconds,
                self.step_failures,
                self.timeouts,
                self.retries,
                self.replays,
            ):
                yield from metric.collect()

    def update(self) -> int:
        """Counts runs that finished since the last update, at most ``RUNS_PER_SCRAPE`` (a
        backlog is worked off over the next scrapes); returns how many it counted."""
        after = self._resume_point()
        records = self._instance.get_run_records(
            RunsFilter(statuses=list(TERMINAL), updated_after=after),
            limit=RUNS_PER_SCRAPE,
            order_by="update_timestamp",
            ascending=True,
        )
        new = [r for r in records if r.dagster_run.run_id not in self._counted]
        for record in new:
            self._count_run(record)
            self._counted[record.dagster_run.run_id] = None
        while len(self._counted) > REMEMBERED_RUNS:
            self._counted.popitem(last=False)
        if records:
            # From just before the last timestamp on: runs updated in the same instant as it
            # are read again, and the counted ids keep them from being counted twice (as they
            # do runs whose record changes after they ended, e.g. a tag added).
            # A restarted exporter, which remembers no ids, resumes after the last timestamp.
            last = records[-1].update_timestamp
            last = last if last.tzinfo else last.replace(tzinfo=UTC)
            if last - OVERLAP > after:
                self._updated_after = last - OVERLAP
                self._instance.run_storage.set_cursor_values({RESUME_KEY: last.isoformat()})
        return len(new)

    def _resume_point(self) -> datetime:
        """Where the previous exporter stopped (kept in the instance, so a restart neither
        counts a run twice nor misses one that ended while it was down); the first exporter
        of an instance starts ``LOOKBACK`` back."""
        if self._updated_after is None:
            stored = self._instance.run_storage.get_cursor_values({RESUME_KEY}).get(RESUME_KEY)
            self._updated_after = (
                datetime.fromisoformat(stored) if stored else datetime.now(UTC) - LOOKBACK
            )
        return self._updated_after

    def _count_run(self, record: RunRecord) -> None:
        run = record.dagster_run
        modality = self._modality(run)
        # Series start at 0 (labels() alone), so the first increment shows in increase()
        # and the panels over them have data before anything went wrong.
        replays = self.replays.labels(modality)
        if "kb/replay-of" in run.tags:
            replays.inc()
        if run.job_name == JOB:
            outcomes = {o: self.documents.labels(modality, o) for o in ("succeeded", "failed")}
            succeeded = run.status is DagsterRunStatus.SUCCESS
            outcomes["succeeded" if succeeded else "failed"].inc()
            if record.start_time and record.end_time:
                seconds = record.end_time - record.start_time
                self.document_seconds.labels(modality).observe(seconds)
        events = self._instance.get_records_for_run(run.run_id, of_type=_STEP_EVENTS).records
        for entry in events:
            event = entry.event_log_entry.dagster_event
            if event is None:
                continue
            asset = event.step_key or "unknown"
            retries, timeouts = (
                self.retries.labels(asset, modality),
                self.timeouts.labels(asset, modality),
            )
            if event.event_type is DagsterEventType.STEP_SUCCESS:
                seconds = event.step_success_data.duration_ms / 1000
                self.processing_seconds.labels(asset, modality).observe(seconds)
            elif event.event_type is DagsterEventType.STEP_UP_FOR_RETRY:
                retries.inc()
            else:
                error_class, _ = step_failure_details(event.step_failure_data)
                self.step_failures.labels(asset, modality, error_class).inc()
                if error_class == Timeout.error_class:
                    timeouts.inc()

    def _modality(self, run: DagsterRun) -> str:
        modality = self._topics.modality_of_ingest(run.tags.get("kb/source-topic", ""))
        return modality.value if modality else run.tags.get("kb/modality", NO_MODALITY)
