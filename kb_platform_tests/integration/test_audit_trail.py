"""The ingestion audit trail on the real broker: who sent each document and when it was
admitted, indexed or dead-lettered, written by the sensors as they act, read back by document
through `kb-platform audit --doc`; a deletion closes the trail. The producer's request id follows
each message into its run's tags, its dead letter and its records."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from dagster import (
    build_sensor_context,
)

from kb_platform.config import REPO_ROOT
from kb_platform.contracts import Modality
from kb_platform.defs.ingestion.kafka_sensor import kafka_ingest_sensor
from kb_platform.kafka.audit_trail import REQUEST_HEADER, SENDER_HEADER, Event, trail
from kb_platform.kafka.dead_letters import headers_dict
from kb_platform.kafka.ingest_reader import READER_CONFIG, read_from_beginning
from kb_platform.structured_logs import REQUEST_ID_TAG
from kb_platform_tests.integration.kafka_helpers import (
    failure_sensor_on,
    message,
    outcome_sensor_on,
)


def test_each_document_has_its_trail_from_sender_to_outcome(stack, corpus_dir: Path) -> None:
    instance, defs, kafka = stack
    topics = kafka.topics()
    docs = corpus_dir / "documents"
    good = docs / "unstructured/example-docs/fake-text.txt"
    corrupt = next(docs.rglob("unreadablemetadata.pdf"))
    producer = kafka.producer()
    sent_by = [(SENDER_HEADER, b"test-producer")]
    for topic, value, request_id in [
        (topics.ingest(Modality.TEXT), message(good, "text"), b"req-good"),
        (topics.ingest(Modality.DOCUMENT), message(corrupt), b"req-corrupt"),
        (topics.ingest(Modality.DOCUMENT), b"{not json", b"forged\nline"),  # not a valid id
    ]:
        headers = [*sent_by, (REQUEST_HEADER, request_id)]
        producer.produce(topic, key=b"k", value=value, headers=headers)
    assert producer.flush(30) == 0

    with build_sensor_context(instance=instance, resources=defs.resources) as context:
        tick = kafka_ingest_sensor(context)
    assert sorted(r.tags[REQUEST_ID_TAG] for r in tick.run_requests) == [
        "req-corrupt",
        "req-good",
    ]
    (partitions,) = tick.dynamic_partitions_requests
    instance.add_dynamic_partitions("documents", list(partitions.partition_keys))
    job = defs.resolve_job_def("process_documents")
    outcomes = {}
    for request in tick.run_requests:
        result = job.execute_in_process(
            instance=instance,
            partition_key=request.partition_key,
            tags=request.tags,
            raise_on_error=False,
        )
        outcomes[request.partition_key] = result
        if result.success:
            outcome_sensor_on(instance, result, kafka)
        else:
            failure_sensor_on(instance, result, kafka)
    indexed = next(d for d, r in outcomes.items() if r.success)
    failed = next(d for d, r in outcomes.items() if not r.success)
    deleted = defs.resolve_job_def("delete_documents").execute_in_process(
        instance=instance,
        run_config={"ops": {"delete_document_chunks": {"config": {"doc_ids": [indexed]}}}},
    )
    outcome_sensor_on(instance, deleted, kafka)

    consumer = kafka.consumer("audit-reader", **READER_CONFIG)
    try:
        good_trail = trail(consumer, topics.audit, indexed)
        failed_trail = trail(consumer, topics.audit, failed)
        poison_trail = trail(consumer, topics.audit, f"{topics.ingest(Modality.DOCUMENT)}:0:1")
        letters = read_from_beginning(
            consumer, [topics.dlq(Modality.DOCUMENT), topics.dlq(None)], 10, 10
        )
    finally:
        consumer.close()
    assert [r.event for r in good_trail] == [Event.ADMITTED, Event.INDEXED, Event.DELETED]
    assert good_trail[0].sender == "test-producer" and good_trail[0].source_id == good.name
    assert good_trail[1].run_id == outcomes[indexed].run_id
    assert good_trail[2].run_id == deleted.run_id
    assert [r.event for r in failed_trail] == [Event.ADMITTED, Event.DEAD_LETTERED]
    assert failed_trail[1].detail.startswith("Corrupt")
    assert [(r.event, r.doc_id, r.sender) for r in poison_trail] == [
        (Event.DEAD_LETTERED, "", "test-producer")
    ]
    assert {r.request_id for r in good_trail[:2]} == {"req-good"}
    assert {r.request_id for r in failed_trail} == {"req-corrupt"}
    # an id that could forge a log line is replaced by the message's own topic:partition:offset
    assert poison_trail[0].request_id == poison_trail[0].source
    # the dead letters keep the request id, so a replay's run carries it on
    letter_ids = {headers_dict(m.headers())["request-id"] for m in letters}
    assert letter_ids == {poison_trail[0].source, "req-corrupt"}

    # The operator's command prints the same trail.
    env = {**os.environ, "KB_KAFKA_AUDIT_TOPIC": topics.audit}
    printed = subprocess.run(
        [str(REPO_ROOT / ".venv/bin/kb-platform"), "audit", "--doc", indexed],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert len(lines) == 3 and "admitted" in lines[0] and "by test-producer" in lines[0]
    assert "request req-good" in lines[0]
    assert "indexed" in lines[1] and outcomes[indexed].run_id in lines[1]
    assert "deleted" in lines[2]
    unknown = subprocess.run(
        [str(REPO_ROOT / ".venv/bin/kb-platform"), "audit", "--doc", "0" * 16],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert unknown.returncode != 0 and "no audit records" in unknown.stderr
