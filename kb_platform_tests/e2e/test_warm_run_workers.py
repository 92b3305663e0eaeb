"""Under the real daemon, runs execute on the warm run workers of ``WarmRunLauncher``
(dagster.yaml): a worker serves run after run, a terminated run is canceled by its worker,
which then serves the next run, and a worker hands back the memory a run freed (the kill of a
worker mid-step is in test_daemon_reliability)."""

from __future__ import annotations

import re
from pathlib import Path

import psutil
from dagster import DagsterEventType, DagsterRunStatus, RunsFilter

from kb_platform.contracts import Modality
from kb_platform.resources.kafka import KafkaResource
from kb_platform.run_workers.launcher import WORKER_TAG, WarmRunLauncher
from kb_platform.run_workers.pool import is_running
from kb_platform_tests.e2e.test_daemon_reliability import eventually, finished, instance_of
from kb_platform_tests.integration.kafka_helpers import message, produce

TEXTS = "documents/unstructured/example-docs"
TEXT_FILES = [
    "book-war-and-peace-1p.txt",
    "fake-text.txt",
    "norwich-city.txt",
    "fake-email.txt",
    "fake-text-utf-16.txt",
]
LONG_PDF = "documents/py-pdf-sample-files/009-pdflatex-geotopo/GeoTopo-komprimiert.pdf"


def started_pid(instance, run_id: str) -> int:
    for event in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        found = re.search(r"Started process for run \(pid: (\d+)\)", event.message or "")
        if found:
            return int(found.group(1))
    raise AssertionError(f"run {run_id} never reported its process")


def test_runs_execute_on_warm_workers_that_serve_many_runs(
    dagster_env: dict[str, str], e2e_kafka: KafkaResource, corpus_dir: Path
) -> None:
    topic = e2e_kafka.topics().ingest(Modality.TEXT)
    with instance_of(dagster_env) as instance:
        assert isinstance(instance.run_launcher, WarmRunLauncher)
        # One run more than there are workers: some worker must serve two.
        files = TEXT_FILES[: instance.run_launcher.workers + 1]
        assert len(files) == instance.run_launcher.workers + 1, "add text files to TEXT_FILES"
        documents = [message(corpus_dir / TEXTS / f, "text") for f in files]
        offsets = produce(e2e_kafka, topic, documents)

        def all_done() -> list | None:
            runs = [
                r
                for r in instance.get_runs(RunsFilter(tags={"kb/source-topic": topic}))
                if r.tags["kb/source-offset"] in offsets  # the topic is shared with other tests
            ]
            done = len(runs) == len(files) and all(r.is_finished for r in runs)
            return runs if done else None

        runs = eventually(all_done, 300, f"{len(files)} runs to finish")
        assert {r.status for r in runs} == {DagsterRunStatus.SUCCESS}
        identities = [r.tags[WORKER_TAG] for r in runs]
        for run, identity in zip(runs, identities, strict=True):
            pid = int(identity.split(":")[0])
            assert started_pid(instance, run.run_id) == pid  # executed where it was handed
            assert is_running(identity)  # the worker outlives its run
            assert "kb_platform.run_workers.worker" in " ".join(psutil.Process(pid).cmdline())
        assert len(set(identities)) < len(identities)
        # after each run its worker trims the C heap (kb_platform/run_workers/memory.py) and
        # says so in the instance's log, where the workers' output goes
        log = Path(dagster_env["KB_LOCAL_DIR"]) / "dagster" / "logs" / "dagster.log"

        def trimmed() -> set[str] | None:
            found = set(
                re.findall(r"run (\S+) done in .* after returning freed memory", log.read_text())
            )
            return found if {r.run_id for r in runs} <= found else None

        eventually(trimmed, 30, "every worker to return its run's freed memory")


def test_a_terminated_run_is_canceled_and_its_worker_goes_on(
    dagster_env: dict[str, str], e2e_kafka: KafkaResource, corpus_dir: Path
) -> None:
    topic = e2e_kafka.topics().ingest(Modality.DOCUMENT)
    (offset,) = produce(e2e_kafka, topic, [message(corpus_dir / LONG_PDF, "document")])
    with instance_of(dagster_env) as instance:
        source = RunsFilter(tags={"kb/source-topic": topic, "kb/source-offset": offset})
        run = eventually(
            lambda: next(iter(instance.get_runs(source)), None), 180, "the sensor's run"
        )

        def in_extraction() -> bool | None:
            events = instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_START)
            return any(e.step_key == "extracted_pages" for e in events) or None

        eventually(in_extraction, 180, "the run to start extracting 117 pages")
        # This process holds no pool: termination reaches the worker through the run's tag.
        assert instance.run_launcher.terminate(run.run_id)
        canceled = eventually(lambda: finished(instance, run.run_id), 120, "the cancellation")
        assert canceled.status is DagsterRunStatus.CANCELED
        assert is_running(canceled.tags[WORKER_TAG])  # interrupted the run, not the worker
