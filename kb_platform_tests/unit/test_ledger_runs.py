"""The ledger's run lookups: only the runs of the offsets asked about, in chunks, each offset's
newest run deciding its state."""

from collections.abc import Iterator

import pytest
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.test_utils import create_run_for_test

from kb_platform.defs.ingestion.kafka_sensor import source_tags
from kb_platform.kafka import ledger
from kb_platform.kafka.ledger import MessageState


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with DagsterInstance.ephemeral() as instance:
        yield instance


def _run(instance: DagsterInstance, topic: str, offset: int, status: DagsterRunStatus) -> None:
    tags = source_tags(topic, 0, offset, f"doc-{offset}")
    create_run_for_test(instance, job_name="process_documents", status=status, tags=tags)


def test_runs_are_looked_up_for_the_offsets_asked_about_only(
    instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger, "_TAG_CHUNK", 2)  # several chunks for five offsets
    for offset in range(8):
        _run(instance, "t", offset, DagsterRunStatus.FAILURE)
    _run(instance, "t", 3, DagsterRunStatus.SUCCESS)  # a re-run of offset 3 succeeded later
    _run(instance, "other", 2, DagsterRunStatus.SUCCESS)

    runs = ledger.source_runs(instance, "t", 0, range(1, 6))
    assert sorted(int(r.tags["kb/source-offset"]) for r in runs) == [1, 2, 3, 3, 4, 5]
    assert {r.tags["kb/source-topic"] for r in runs} == {"t"}

    states = ledger.run_states(runs)
    assert states[3] is MessageState.INDEXED
    assert {states[o] for o in (1, 2, 4, 5)} == {MessageState.IN_FLIGHT}  # not dead-lettered yet
