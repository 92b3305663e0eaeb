"""Under the real daemon: a run whose process is killed in the middle of a step fails, is
retried whole by the instance's run retries, and its message ends indexed and committed, with
nothing dead-lettered, nothing unaccounted and no duplicate chunks."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from confluent_kafka import TopicPartition
from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter
from dagster._core.test_utils import environ as mock_env
from elasticsearch import Elasticsearch

from kb_platform.contracts import Modality
from kb_platform.index.mapping import IndexNames
from kb_platform.resources.kafka import KafkaResource
from kb_platform_tests.integration.kafka_helpers import (
    assert_all_accounted,
    assert_no_duplicate_chunks,
    drain,
    message,
    produce,
)

T = TypeVar("T")
KILLED_STEP = "text_embeddings"  # loads torch and the model: seconds into the step


def eventually(probe: Callable[[], T | None], timeout_s: float, what: str) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value is not None:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@contextmanager
def instance_of(env: dict[str, str]) -> Iterator[DagsterInstance]:
    with mock_env({"DAGSTER_HOME": env["DAGSTER_HOME"]}), DagsterInstance.get() as instance:
        yield instance


def finished(instance: DagsterInstance, run_id: str) -> DagsterRun | None:
    run = instance.get_run_by_id(run_id)
    return run if run is not None and run.is_finished else None


def run_process_pid(instance: DagsterInstance, run_id: str) -> int | None:
    """The run worker's pid once the run is inside KILLED_STEP."""
    events = instance.all_logs(run_id)
    in_step = any(
        e.dagster_event_type == DagsterEventType.STEP_START and e.step_key == KILLED_STEP
        for e in events
    )
    for event in events:
        found = re.search(r"Started process for run \(pid: (\d+)\)", event.message or "")
        if found and in_step:
            return int(found.group(1))
    return None


def test_a_run_killed_mid_step_is_retried_and_accounted_for(
    dagster_env: dict[str, str], e2e_kafka: KafkaResource, corpus_dir: Path, es: Elasticsearch
) -> None:
    topic = e2e_kafka.topics().ingest(Modality.IMAGE)
    (offset,) = produce(
        e2e_kafka, topic, [message(corpus_dir / "ocr/tesseract/phototest.tif", "image")]
    )
    source = {"kb/source-topic": topic, "kb/source-offset": offset}
    with instance_of(dagster_env) as instance:
        first = eventually(
            lambda: next(iter(instance.get_runs(RunsFilter(tags=source))), None),
            180,
            "the sensor's run",
        )
        pid = eventually(
            lambda: run_process_pid(instance, first.run_id), 300, f"step {KILLED_STEP}"
        )
        os.kill(pid, signal.SIGKILL)

        killed = eventually(
            lambda: finished(instance, first.run_id),
            60,
            "the killed run to be marked failed",
        )
        assert killed.status is DagsterRunStatus.FAILURE
        retry = eventually(
            lambda: next(
                (
                    r
                    for r in instance.get_runs(
                        RunsFilter(tags={"dagster/parent_run_id": first.run_id})
                    )
                    if r.is_finished
                ),
                None,
            ),
            420,
            "the retried run to finish",
        )
        assert retry.status is DagsterRunStatus.SUCCESS
        assert retry.tags["kb/source-topic"] == topic  # the ledger follows the retry

        consumer = e2e_kafka.consumer(e2e_kafka.consumer_group)
        try:
            eventually(
                lambda: (
                    consumer.committed([TopicPartition(topic, 0)], timeout=10)[0].offset == 1
                    or None
                ),
                120,
                "the offset commit over the retried message",
            )
        finally:
            consumer.close()
        assert_all_accounted(instance, e2e_kafka)

    alias = IndexNames(dagster_env["KB_ELASTICSEARCH_INDEX_BASE"]).read_alias
    assert_no_duplicate_chunks(es, alias, retry.tags["kb/doc_id"])
    # The crash was retried, not a final failure: nothing went to the dead-letter topic.
    assert drain(e2e_kafka, e2e_kafka.topics().dlq(Modality.IMAGE), expected=1) == []
