"""Failed runs that nothing settles are adopted by the ingest lease holder (adopt_orphaned_runs):
a failure whose own location's sensor never ran (the location was removed) is dead-lettered,
one whose retry could not be made is requested again, once, and neither is touched before its
grace has passed or by a location that does not hold the lease. A failure the run-failure
sensor reads before Dagster has tagged whether it retries it is left to that retry. Real broker,
real runs."""

from __future__ import annotations

import time
from pathlib import Path

from dagster import (
    DagsterInstance,
    Definitions,
    RunRequest,
    SensorResult,
    SkipReason,
    asset,
    build_sensor_context,
    define_asset_job,
)

from kb_platform.config import Settings
from kb_platform.contracts import Modality
from kb_platform.defs.failures import typed_failures
from kb_platform.defs.ingestion.kafka_sensor import kafka_ingest_sensor
from kb_platform.defs.ingestion.partitions import documents_partitions
from kb_platform.defs.reliability.failed_runs import ADOPTED_FROM_TAG
from kb_platform.defs.reliability.orphaned_runs_sensor import adopt_orphaned_runs
from kb_platform.errors import Corrupt
from kb_platform.kafka import ingest_lease
from kb_platform.kafka.dead_letters import headers_dict
from kb_platform.kafka.ledger import MessageState, classify
from kb_platform.resources.processing import ProcessingResource
from kb_platform_tests.integration.kafka_helpers import (
    assert_all_accounted,
    drain,
    failure_sensor_on,
    message,
    produce,
)

TEXT = "documents/unstructured/example-docs/fake-text.txt"


@asset(name="text_embeddings", partitions_def=documents_partitions)
def embeddings_that_fail() -> None:
    with typed_failures("doc"):
        raise Corrupt("the embedding step broke")


FAILING = Definitions(assets=[embeddings_that_fail], jobs=[define_asset_job("process_documents")])


def sweep(
    instance: DagsterInstance, defs: Definitions, settings: Settings, grace_s: float
) -> SensorResult | SkipReason:
    grace = settings.model_copy(update={"orphaned_run_grace_s": grace_s})
    resources = {**defs.resources, "processing": ProcessingResource.from_settings(grace)}
    with build_sensor_context(instance=instance, resources=resources) as context:
        return adopt_orphaned_runs(context)


def ingest_one(instance: DagsterInstance, defs: Definitions, kafka, corpus_dir: Path) -> RunRequest:  # type: ignore[no-untyped-def]
    """One message read by the ingest sensor, which takes the lease as this process's location."""
    produce(kafka, kafka.topics().ingest(Modality.TEXT), [message(corpus_dir / TEXT, "text")])
    with build_sensor_context(instance=instance, resources=defs.resources) as context:
        (request,) = kafka_ingest_sensor(context).run_requests
    instance.add_dynamic_partitions("documents", [request.partition_key])
    return request


def test_a_failure_its_location_never_settled_is_dead_lettered_by_the_lease_holder(
    stack, corpus_dir: Path, settings: Settings
) -> None:
    instance, defs, kafka = stack
    request = ingest_one(instance, defs, kafka, corpus_dir)
    failed = FAILING.resolve_job_def("process_documents").execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        tags=request.tags,
        raise_on_error=False,
    )
    assert not failed.success
    topic = kafka.topics().ingest(Modality.TEXT)
    # Its own location's dead_letter_on_failure never evaluates it (that location is gone).
    assert isinstance(sweep(instance, defs, settings, grace_s=3600), SkipReason)  # within its grace
    assert classify(instance, topic, 0, range(1), 1) == {0: MessageState.IN_FLIGHT}

    # Another location holds the lease: this one does not sweep.
    ingest_lease.acquire(instance, "blue", now=time.time() + ingest_lease.DEFAULT_TTL_S + 1)
    skipped = sweep(instance, defs, settings, grace_s=0)
    assert isinstance(skipped, SkipReason) and "lease" in (skipped.skip_message or "")
    assert classify(instance, topic, 0, range(1), 1) == {0: MessageState.IN_FLIGHT}

    ingest_lease.acquire(instance, "in-process", now=time.time() + 3 * ingest_lease.DEFAULT_TTL_S)
    result = sweep(instance, defs, settings, grace_s=0)
    assert isinstance(result, SensorResult) and not result.run_requests
    (letter,) = drain(kafka, kafka.topics().dlq(Modality.TEXT), expected=1)
    headers = headers_dict(letter.headers())
    assert (headers["error-class"], headers["run-id"]) == ("Corrupt", failed.run_id)
    assert classify(instance, topic, 0, range(1), 1) == {0: MessageState.DEAD_LETTERED}

    # Settled once: neither a second sweep nor the failure sensor, should it run late, adds one.
    assert isinstance(sweep(instance, defs, settings, grace_s=0), SkipReason)
    assert failure_sensor_on(instance, failed, kafka) is None
    assert len(drain(kafka, kafka.topics().dlq(Modality.TEXT), expected=2)) == 1
    assert_all_accounted(instance, kafka)


def test_a_failure_whose_retry_was_never_made_is_requested_again_once(
    stack, corpus_dir: Path, settings: Settings
) -> None:
    _, defs, kafka = stack
    retries = {"run_retries": {"enabled": True, "max_retries": 2}}
    with DagsterInstance.ephemeral(settings=retries) as instance:
        request = ingest_one(instance, defs, kafka, corpus_dir)
        failed = FAILING.resolve_job_def("process_documents").execute_in_process(
            instance=instance,
            partition_key=request.partition_key,
            tags={**request.tags, "dagster/retry_on_asset_or_op_failure": "true"},
            raise_on_error=False,
        )
        run = instance.get_run_by_id(failed.run_id)
        assert run.tags["dagster/will_retry"] == "true"
        assert isinstance(
            sweep(instance, defs, settings, grace_s=0), SkipReason
        )  # Dagster retries it

        # The retry daemon could not make the retry (its code location was gone): it marks the
        # run so (dagster/_daemon/auto_run_reexecution), after its failure was evaluated. The
        # tag stands in for that daemon here; the fault matrix's blue/green case does it for real.
        instance.add_run_tags(failed.run_id, {"dagster/will_retry": "false"})
        result = sweep(instance, defs, settings, grace_s=0)
        assert isinstance(result, SensorResult)
        (again,) = result.run_requests
        assert again.run_key == f"{failed.run_id}:adopted"
        assert again.partition_key == request.partition_key
        assert again.tags[ADOPTED_FROM_TAG] == failed.run_id
        assert again.tags["kb/attempt"] == "2"
        assert again.tags["kb/source"] == request.tags["kb/source"]

        healed = defs.resolve_job_def("process_documents").execute_in_process(
            instance=instance, partition_key=again.partition_key, tags=again.tags
        )
        assert healed.success
        topic = kafka.topics().ingest(Modality.TEXT)
        assert classify(instance, topic, 0, range(1), 1) == {0: MessageState.INDEXED}
        assert isinstance(sweep(instance, defs, settings, grace_s=0), SkipReason)
        # The failure sensor, evaluating the old failure late, leaves the adopted message alone.
        assert failure_sensor_on(instance, failed, kafka) is None
        assert drain(kafka, kafka.topics().dlq(Modality.TEXT), expected=1) == []


def test_a_failure_read_before_dagster_tagged_its_retry_is_left_to_the_retry(
    stack, corpus_dir: Path, tmp_path: Path
) -> None:
    """Dagster stores a run's failure, then tags ``dagster/will_retry``: a restarted daemon's
    failure sensor once read a killed run in between, dead-lettered it, and the retry and the
    letter's replay both indexed the document. Here the failure is written through a view of
    the instance without run retries (so it has no such tag, as for that moment) and read
    through one with them, as the daemon reads it."""
    _, defs, kafka = stack
    home = tmp_path / "instance"
    home.mkdir()
    no_retries = {"run_retries": {"enabled": False}}
    with DagsterInstance.local_temp(str(home), overrides=no_retries) as writer:
        request = ingest_one(writer, defs, kafka, corpus_dir)
        failed = FAILING.resolve_job_def("process_documents").execute_in_process(
            instance=writer,
            partition_key=request.partition_key,
            tags={**request.tags, "dagster/retry_on_asset_or_op_failure": "true"},
            raise_on_error=False,
        )
    topic, dlq = kafka.topics().ingest(Modality.TEXT), kafka.topics().dlq(Modality.TEXT)
    retries = {"run_retries": {"enabled": True, "max_retries": 2}}
    with DagsterInstance.local_temp(str(home), overrides=retries) as instance:
        assert "dagster/will_retry" not in instance.get_run_by_id(failed.run_id).tags
        assert failure_sensor_on(instance, failed, kafka) is None
        assert drain(kafka, dlq, expected=1) == []
        assert classify(instance, topic, 0, range(1), 1) == {0: MessageState.IN_FLIGHT}

    # Where Dagster would not retry it, the same failure is final and dead-lettered.
    with DagsterInstance.local_temp(str(home), overrides=no_retries) as instance:
        assert failure_sensor_on(instance, failed, kafka) is None
        (letter,) = drain(kafka, dlq, expected=1)
        assert headers_dict(letter.headers())["run-id"] == failed.run_id
        assert classify(instance, topic, 0, range(1), 1) == {0: MessageState.DEAD_LETTERED}
