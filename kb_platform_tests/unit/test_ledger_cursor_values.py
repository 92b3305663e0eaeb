"""The ledger's read positions on Dagster's SQLite storage: a tick that moves known partitions
and reaches a new one for the first time keeps both (SQLite's storage drops the new keys of a
mixed update, so the ledger writes them apart)."""

from __future__ import annotations

from dagster import DagsterInstance

from kb_platform.kafka.ledger import read_position, record_read_positions


def test_new_and_known_partitions_are_both_recorded(tmp_path) -> None:
    with DagsterInstance.local_temp(str(tmp_path)) as instance:
        record_read_positions(instance, {"kb.ingest.text:0": 3})
        record_read_positions(instance, {"kb.ingest.text:0": 5, "kb.ingest.image:1": 2})
        assert read_position(instance, "kb.ingest.text", 0) == 5
        assert read_position(instance, "kb.ingest.image", 1) == 2
