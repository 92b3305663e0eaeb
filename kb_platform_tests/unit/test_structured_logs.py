"""The pipeline's run and step logs as JSON lines (dagster.yaml's python_logs handler, into
$DAGSTER_HOME/logs/runs.jsonl): each with its run id, step, event type and document, the message
without Dagster's prefix."""

import json
import logging
import shutil
from pathlib import Path

import pytest
from dagster import (
    AssetExecutionContext,
    DagsterInstance,
    DynamicPartitionsDefinition,
    Failure,
    asset,
    materialize,
)

from kb_platform.config import REPO_ROOT
from kb_platform.structured_logs import DagsterJsonFormatter

documents = DynamicPartitionsDefinition(name="documents")


@asset(partitions_def=documents)
def greeted(context: AssetExecutionContext) -> None:
    context.log.info(f"hello {context.partition_key}")


@asset(partitions_def=documents)
def refused() -> None:
    raise Failure(description="Corrupt: not a PDF")


def test_run_logs_are_json_lines_with_run_step_and_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(REPO_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        instance.add_dynamic_partitions("documents", ["0123abcd0123abcd"])
        result = materialize(
            [greeted],
            instance=instance,
            partition_key="0123abcd0123abcd",
            tags={"kb/doc_id": "0123abcd0123abcd"},
        )
    assert result.success
    run_log = tmp_path / "logs" / "runs.jsonl"  # dagster.yaml's handler: $DAGSTER_HOME/logs
    lines = [json.loads(line) for line in run_log.read_text().splitlines()]
    (hello,) = [line for line in lines if line.get("message") == "hello 0123abcd0123abcd"]
    assert hello["run_id"] == result.run_id and hello["step"] == "greeted"
    assert hello["doc_id"] == "0123abcd0123abcd" and hello["level"] == "info"
    # Events at INFO and above (DEBUG ones such as STEP_START stay out): a failure, with its run.
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        failed = materialize(
            [refused], instance=instance, partition_key="0123abcd0123abcd", raise_on_error=False
        )
    lines = [json.loads(line) for line in run_log.read_text().splitlines()]
    (failure,) = [line for line in lines if line.get("event") == "STEP_FAILURE"]
    assert failure["run_id"] == failed.run_id and failure["step"] == "refused"
    assert failure["level"] == "error" and failure["doc_id"] == "0123abcd0123abcd"
    assert not [line for line in lines if line.get("event") == "STEP_START"]


def test_a_record_from_outside_dagster_stays_plain_json() -> None:
    record = logging.makeLogRecord({"name": "kb_platform.x", "msg": "plain", "levelname": "INFO"})
    entry = json.loads(DagsterJsonFormatter().format(record))
    assert entry["message"] == "plain" and "run_id" not in entry
