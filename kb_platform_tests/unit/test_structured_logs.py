"""The pipeline's run and step logs as JSON lines (dagster.yaml's python_logs handler, into
$DAGSTER_HOME/logs/runs.jsonl): each with its run id, step, event type, document and request
id, the message without Dagster's prefix; request ids that could forge a log line refused."""

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
from kb_platform.structured_logs import REQUEST_ID_TAG, DagsterJsonFormatter, valid_request_id

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
            tags={"kb/doc_id": "0123abcd0123abcd", REQUEST_ID_TAG: "kb.ingest.text:0:7"},
        )
    assert result.success
    run_log = tmp_path / "logs" / "runs.jsonl"  # dagster.yaml's handler: $DAGSTER_HOME/logs
    lines = [json.loads(line) for line in run_log.read_text().splitlines()]
    (hello,) = [line for line in lines if line.get("message") == "hello 0123abcd0123abcd"]
    assert hello["run_id"] == result.run_id and hello["step"] == "greeted"
    assert hello["doc_id"] == "0123abcd0123abcd" and hello["level"] == "info"
    assert hello["request_id"] == "kb.ingest.text:0:7"
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


@pytest.mark.parametrize(
    "given",
    ["", "a b", 'x"y', "line\nbreak", "tab\t", "x" * 65, "caf\u00e9", "{}", "a/b"],
)
def test_request_ids_that_could_forge_a_log_line_are_refused(given: str) -> None:
    assert valid_request_id(given) is None


def test_request_ids_of_our_own_form_pass() -> None:
    for given in ["kb.ingest.text:0:17", "3f2a9c0e" * 4, "req-123_A", "x" * 64]:
        assert valid_request_id(given) == given
