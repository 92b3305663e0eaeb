"""Real faults, healed: Elasticsearch down during a run (step retries with backoff carry it
through), the broker down during a sensor tick (the tick fails without moving the cursor and
the next one after the restart picks up where it was). The shared servers are stopped and
started again by their own scripts."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from dagster import (
    AssetKey,
    Definitions,
    RetryPolicy,
    RunRequest,
    asset,
    build_sensor_context,
    define_asset_job,
    materialize,
)

from kb_platform.contracts import Modality
from kb_platform.definitions import build_definitions
from kb_platform.defs.ingestion.kafka_sensor import kafka_ingest_sensor
from kb_platform.defs.ingestion.partitions import documents_partitions
from kb_platform.defs.reliability.failed_runs import OUTAGE_RETRY_TAG
from kb_platform.encoder_service.client import EncoderClient
from kb_platform.kafka.dead_letters import headers_dict
from kb_platform.kafka.ledger import MessageState, classify
from kb_platform.resources.processing import ProcessingResource
from kb_platform_tests.integration.kafka_helpers import (
    assert_all_accounted,
    assert_no_duplicate_chunks,
    drain,
    failure_sensor_on,
    message,
    produce,
)
from kb_platform_tests.local_services import local_service
from kb_platform_tests.ports import free_port


@pytest.fixture
def restart_after() -> threading.Thread:
    """Starts a service again after a delay, in the background (and for sure at the end)."""
    started: list[tuple[str, threading.Thread]] = []

    def schedule(name: str, delay_s: float) -> threading.Thread:
        thread = threading.Thread(target=lambda: (time.sleep(delay_s), local_service(name, "up")))
        thread.start()
        started.append((name, thread))
        return thread

    yield schedule
    for name, thread in started:
        thread.join()
        local_service(name, "up")


def test_elasticsearch_outage_heals_within_step_retries(
    es,
    stack,
    corpus_dir: Path,
    restart_after,
) -> None:
    instance, defs, kafka = stack
    topic = kafka.topics().ingest(Modality.TEXT)
    produce(
        kafka,
        topic,
        [message(corpus_dir / "documents/unstructured/example-docs/fake-text.txt", "text")],
    )
    with build_sensor_context(instance=instance, resources=defs.resources) as context:
        (request,) = kafka_ingest_sensor(context).run_requests
    instance.add_dynamic_partitions("documents", [request.partition_key])

    job = defs.resolve_job_def("process_documents")
    healthy = job.execute_in_process(
        instance=instance, partition_key=request.partition_key, tags=request.tags
    )
    assert healthy.success  # everything up to the index is stored

    # Now the indexing step alone, with Elasticsearch down until well into its retries.
    local_service("elasticsearch", "down")
    restart_after("elasticsearch", 8)
    result = materialize(
        list(defs.assets),
        selection=[AssetKey("search_index")],
        partition_key=request.partition_key,
        instance=instance,
        resources=defs.resources,
        tags=request.tags,
        raise_on_error=False,
    )
    assert result.success
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert any(e.step_key == "search_index" for e in retries)
    alias = defs.resources["elasticsearch"].names.read_alias
    assert_no_duplicate_chunks(es, alias, request.partition_key)
    assert_all_accounted(instance, kafka)


def test_broker_down_fails_the_tick_without_losing_the_cursor(
    stack,
    corpus_dir: Path,
    restart_after,
) -> None:
    instance, defs, kafka = stack
    topic = kafka.topics().ingest(Modality.TEXT)
    files = sorted((corpus_dir / "documents/unstructured/example-docs").glob("fake-text*.txt"))
    produce(kafka, topic, [message(files[0], "text")])
    with build_sensor_context(instance=instance, resources=defs.resources) as context:
        first = kafka_ingest_sensor(context)
    assert [r.run_key for r in first.run_requests] == [f"{topic}:0:0"]

    local_service("kafka", "down")
    started = time.monotonic()
    with (
        pytest.raises(KafkaException),
        build_sensor_context(
            instance=instance, resources=defs.resources, cursor=first.cursor
        ) as context,
    ):
        kafka_ingest_sensor(context)
    assert time.monotonic() - started < 60  # a tick never blocks the daemon for long
    restart_after("kafka", 0).join()

    produce(kafka, topic, [message(files[1], "text")])
    with build_sensor_context(
        instance=instance, resources=defs.resources, cursor=first.cursor
    ) as context:
        after = kafka_ingest_sensor(context)
    assert [r.run_key for r in after.run_requests] == [f"{topic}:0:1"]

    # What the daemon does with the requests: every message read ends in a run.
    job = defs.resolve_job_def("process_documents")
    for request in [*first.run_requests, *after.run_requests]:
        instance.add_dynamic_partitions("documents", [request.partition_key])
        job.execute_in_process(
            instance=instance, partition_key=request.partition_key, tags=request.tags
        )
    assert_all_accounted(instance, kafka)


def test_a_timed_out_document_is_dead_lettered_and_accounted_for(
    stack, corpus_dir: Path, settings
) -> None:
    instance, defs, kafka = stack
    strict = ProcessingResource(
        **{**ProcessingResource.from_settings(settings).model_dump(), "timeout_document_s": 0.5}
    )
    resources = {**defs.resources, "processing": strict}
    topic = kafka.topics().ingest(Modality.DOCUMENT)
    slow = corpus_dir / "documents/py-pdf-sample-files/009-pdflatex-geotopo/GeoTopo-komprimiert.pdf"
    produce(kafka, topic, [message(slow)])
    with build_sensor_context(instance=instance, resources=resources) as context:
        (request,) = kafka_ingest_sensor(context).run_requests
    instance.add_dynamic_partitions("documents", [request.partition_key])
    strict_defs = build_definitions(resources)
    result = strict_defs.resolve_job_def("process_documents").execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        tags=request.tags,
        raise_on_error=False,
    )
    assert not result.success

    failure_sensor_on(instance, result, kafka)
    (letter,) = drain(kafka, kafka.topics().dlq(Modality.DOCUMENT), 1)
    assert headers_dict(letter.headers())["error-class"] == "Timeout"
    assert_all_accounted(instance, kafka)


@asset(
    name="text_embeddings",
    partitions_def=documents_partitions,
    retry_policy=RetryPolicy(max_retries=1, delay=0.1),
)
def embeddings_with_the_encoder_down() -> None:
    # The real client against a port nothing listens on: connection refused, every attempt.
    EncoderClient(f"http://127.0.0.1:{free_port()}", "token", timeout_s=2).embed_texts(["x"])


def test_a_service_outage_past_the_step_retries_requests_the_document_again(
    stack, es, corpus_dir: Path
) -> None:
    instance, defs, kafka = stack
    topic = kafka.topics().ingest(Modality.TEXT)
    text = corpus_dir / "documents/unstructured/example-docs/fake-text.txt"
    produce(kafka, topic, [message(text, "text")])
    with build_sensor_context(instance=instance, resources=defs.resources) as context:
        (request,) = kafka_ingest_sensor(context).run_requests
    instance.add_dynamic_partitions("documents", [request.partition_key])

    # A run of the processing job whose embedding step ran out of retries on the outage.
    outage = Definitions(
        assets=[embeddings_with_the_encoder_down],
        jobs=[define_asset_job("process_documents")],
    )
    failed = outage.resolve_job_def("process_documents").execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        tags=request.tags,
        raise_on_error=False,
    )
    assert not failed.success

    again = failure_sensor_on(instance, failed, kafka)
    assert isinstance(again, RunRequest), "an outage is no dead letter: the document runs again"
    assert again.partition_key == request.partition_key
    assert again.tags[OUTAGE_RETRY_TAG] == "1"
    assert {k: again.tags[k] for k in request.tags} == request.tags  # same message, same limits
    assert again.run_key == failure_sensor_on(instance, failed, kafka).run_key  # idempotent
    assert drain(kafka, kafka.topics().dlq(Modality.TEXT), expected=1) == []
    assert classify(instance, topic, 0, range(1), 1) == {0: MessageState.IN_FLIGHT}

    # The service is back: the requested run indexes the message.
    healed = defs.resolve_job_def("process_documents").execute_in_process(
        instance=instance, partition_key=again.partition_key, tags=again.tags
    )
    assert healed.success
    assert classify(instance, topic, 0, range(1), 1) == {0: MessageState.INDEXED}
    alias = defs.resources["elasticsearch"].names.read_alias
    assert_no_duplicate_chunks(es, alias, request.partition_key)
    assert_all_accounted(instance, kafka)
