"""The fault matrix: for each fault, a stream of new documents is produced while the real
deployment (daemon, code server, PostgreSQL instance storage, Kafka, Elasticsearch, the encoder
service, the blob store) suffers it; afterwards every message must be indexed or dead-lettered
(never lost), no chunk stored twice, no message indexed by two runs, and the consumer lag back
to 0 within 5 minutes of the fault clearing. `pytest -m faults` runs the matrix alone and
prints its table; `-m "not faults"` leaves it out locally (CI runs it)."""

from __future__ import annotations

import re
import time

import pytest

from kb_platform.contracts import Modality
from kb_platform_tests.faults.conftest import OUTCOMES
from kb_platform_tests.faults.faults import FAULTS, Fault, Matrix
from kb_platform_tests.faults.stream import (
    DocumentStream,
    outcome,
    runs_of,
    wait_for_a_running_run,
    wait_settled,
)

pytestmark = [pytest.mark.services, pytest.mark.faults]

INTERVAL_S = 2.0
RECOVERY_LIMIT_S = 300.0  # the seed: recovery in under 5 minutes


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


@pytest.mark.parametrize("fault", FAULTS, ids=[slug(f.name) for f in FAULTS])
def test_no_message_is_lost_or_duplicated_and_ingestion_recovers(
    matrix: Matrix, fault: Fault
) -> None:
    poison = {fault.poison_at: matrix.crash_marker} if fault.poison_at is not None else {}
    stream = DocumentStream(
        matrix.kafka,
        matrix.kafka.topics().ingest(Modality.TEXT),
        matrix.docs,
        slug(fault.name),
        matrix.body,
        fault.documents,
        INTERVAL_S,
        poison=poison,
    )
    stream.start()
    wait_for_a_running_run(matrix.instance, stream)
    fault.inject(matrix)
    time.sleep(fault.hold_s)
    fault.clear(matrix)
    stream.join()
    recovery_s = wait_settled(matrix.instance, matrix.kafka, stream, RECOVERY_LIMIT_S)
    result = outcome(fault.name, matrix.instance, matrix.es, matrix.alias, stream, recovery_s)
    OUTCOMES.append(result)
    assert result.lost == 0, result.report()
    assert result.duplicated_chunks == 0, result.report()
    assert result.reprocessed == 0, result.report()
    assert result.dead_lettered == fault.expect_dead_letters, result.report()
    assert result.recovery_s < RECOVERY_LIMIT_S, result.report()
    if fault.locations is not None:
        launched_by = {
            r.remote_job_origin.location_name for r in runs_of(matrix.instance, stream.sent)
        }
        assert launched_by == fault.locations
