"""The README flows against a real `dagster dev` (webserver + daemon): `kb-platform ingest`, one
queued run per document, outcomes read back from the instance; and `make demo`'s
`kb-platform produce --follow`, Kafka messages followed until the sensors settled each."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dagster import DagsterInstance, RunsFilter
from dagster._core.test_utils import environ as mock_env
from elasticsearch import Elasticsearch

from kb_platform.index.mapping import IndexNames

KB = Path(sys.executable).parent / "kb-platform"


def kb(env: dict[str, str], *args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KB), *args], env=env, capture_output=True, text=True, timeout=timeout_s
    )


def test_ingest_launches_one_run_per_document_and_reports_outcomes(
    dagster_env: dict[str, str], corpus_dir: Path, es: Elasticsearch
) -> None:
    files = [
        corpus_dir / "documents/py-pdf-sample-files/026-latex-multicolumn/multicolumn.pdf",
        corpus_dir / "ocr/tesseract/phototest.tif",
        next((corpus_dir / "documents").rglob("unreadablemetadata.pdf")),
        corpus_dir / "documents/unstructured/example-docs/empty.txt",
    ]
    port = dagster_env["KB_DAGSTER_PORT"]
    result = kb(
        dagster_env,
        *["ingest", *map(str, files), "--dagster-port", port, "--wait", "--timeout", "600"],
        timeout_s=900,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "admitted 3 documents, rejected 1 {'EmptyInput': 1}" in output
    assert "outcomes: {'Corrupt': 1, 'SUCCESS': 2}" in output
    # Both documents that succeeded are searchable through the read alias.
    alias = IndexNames(dagster_env["KB_ELASTICSEARCH_INDEX_BASE"]).read_alias
    indexed = es.search(index=alias, size=0, aggs={"d": {"cardinality": {"field": "doc_id"}}})
    assert indexed["aggregations"]["d"]["value"] == 2

    again = kb(dagster_env, "ingest", str(files[0]), "--dagster-port", port, timeout_s=300)
    # The same bytes are the same document: admitted again into the same partition.
    assert "admitted 1 documents" in again.stdout


def test_in_process_ingest_records_runs_in_the_instance(
    dagster_env: dict[str, str], corpus_dir: Path
) -> None:
    files = [
        corpus_dir / "documents/unstructured/example-docs/fake-text.txt",
        corpus_dir / "bad-inputs/pillow/truncated_image.png",
    ]
    result = kb(dagster_env, "ingest", *map(str, files), "--in-process", timeout_s=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "outcomes: {'Corrupt': 1, 'SUCCESS': 1}" in output
    assert "dagster - DEBUG" not in output  # step logs go to the event log, not the terminal
    env = {k: v for k, v in dagster_env.items() if k == "DAGSTER_HOME"}
    with mock_env(env), DagsterInstance.get() as instance:
        runs = instance.get_runs(RunsFilter(tags={"kb/launched_by": "ingest --in-process"}))
    assert len(runs) == 2


def test_produce_follow_reports_progress_until_every_message_is_settled(
    dagster_env: dict[str, str], corpus_dir: Path
) -> None:
    files = [
        corpus_dir / "documents/unstructured/example-docs/norwich-city.txt",
        next((corpus_dir / "documents").rglob("unreadablemetadata.pdf")),
    ]
    follow = ["--follow", "--interval", "2", "--timeout", "600"]
    result = kb(dagster_env, "produce", *map(str, files), *follow, timeout_s=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("produced {"), output
    assert len(lines) > 2, "progress lines while the sensors work"
    assert "2/2 settled: indexed 1, failed 1, dead-lettered 1, parked 0, in flight 0" in lines[-1]
    assert "| lag " in lines[-1] and "docs/s | ETA" in lines[-1]
    assert "PreviewWarning" not in output and "dagster - DEBUG" not in output
