"""A `dagster dev` of a benchmark's own (webserver + daemon + warm run workers) and what the
benchmarks read back from its instance: where each run's time went and the lag in seconds."""

from __future__ import annotations

import collections
import os
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import yaml
from confluent_kafka import Producer
from dagster import DagsterEventType, DagsterInstance, RunsFilter

from kb_platform.config import REPO_ROOT
from kb_platform.kafka.lag import lag_seconds
from kb_platform.local_stack import DAGSTER_SCRIPT, dagster_dev_env
from kb_platform.resources.kafka import KafkaResource

ENCODER_SCRIPT = REPO_ROOT / "deploy" / "local" / "encoder" / "encoder.sh"
JOB = "process_documents"
Offset = tuple[str, int, int]


def encoder_service_env(work: Path) -> dict[str, str]:
    """Starts an encoder service of the benchmark's own; the variables that point runs at it."""
    env = {**os.environ, "KB_LOCAL_DIR": str(work / "local"), "KB_ENCODER_PORT": "3121"}
    subprocess.run(["bash", str(ENCODER_SCRIPT), "up"], env=env, check=True, capture_output=True)
    token = (work / "local" / "encoder" / "token").read_text().strip()
    return {"KB_ENCODER_URL": "http://127.0.0.1:3121", "KB_ENCODER_TOKEN": token}


def stop_encoder_service(work: Path) -> None:
    env = {**os.environ, "KB_LOCAL_DIR": str(work / "local")}
    subprocess.run(["bash", str(ENCODER_SCRIPT), "down"], env=env, capture_output=True)


@contextmanager
def daemon_stack(
    kafka: KafkaResource, work: Path, index_base: str, extra_env: dict[str, str]
) -> Iterator[DagsterInstance]:
    """`dagster dev` on the benchmark's topics, index and instance; yields that instance once
    its warm run workers are ready (an idle stack, as a user's would be)."""
    env = {**dagster_dev_env(work, "3112", index_base, kafka), **extra_env}
    up = subprocess.run(
        ["bash", str(DAGSTER_SCRIPT), "up"], env=env, capture_output=True, text=True
    )
    if up.returncode != 0:
        raise RuntimeError(f"dagster.sh up failed:\n{up.stdout}{up.stderr}")
    try:
        wait_for_warm_workers(work / "local" / "dagster" / "logs" / "dagster.log")
        os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
        with DagsterInstance.get() as instance:
            yield instance
    finally:
        subprocess.run(["bash", str(DAGSTER_SCRIPT), "down"], env=env, capture_output=True)


def worker_memory() -> str:
    """Resident memory of each warm run worker now (MiB), to see what runs leave behind."""
    sizes = [
        f"{p.info['memory_info'].rss / 2**20:.0f}"
        for p in psutil.process_iter(["cmdline", "memory_info"])
        if "kb_platform.run_workers.worker" in " ".join(p.info["cmdline"] or [])
    ]
    return ", ".join(sizes) + " MiB" if sizes else "no workers"


def configured_workers() -> int:
    """The warm run workers dagster.yaml asks for."""
    config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    return int(config["run_launcher"]["config"]["workers"])


def wait_for_warm_workers(log: Path, timeout_s: float = 300) -> None:
    workers = configured_workers()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log.exists() and log.read_text(errors="replace").count("worker warm in") >= workers:
            return
        time.sleep(1)
    raise TimeoutError(f"run workers not warm after {timeout_s:.0f} s (see {log})")


class ProduceClock:
    """Produces messages and remembers each one's Kafka timestamp by offset."""

    def __init__(self, kafka: KafkaResource) -> None:
        self.producer: Producer = kafka.producer()
        self.produced_at: dict[Offset, float] = {}

    def _delivered(self, error, message) -> None:
        if error is None:
            key = (message.topic(), message.partition(), message.offset())
            self.produced_at[key] = message.timestamp()[1] / 1000

    def produce(self, topic: str, value: bytes) -> None:
        self.producer.produce(topic, value=value, on_delivery=self._delivered)
        self.producer.poll(0)

    def flush(self) -> None:
        assert self.producer.flush(60) == 0


class LagSampler:
    """Samples the lag in seconds (kb_platform.kafka.lag) every ``interval_s`` in a thread."""

    def __init__(self, kafka: KafkaResource, instance: DagsterInstance, interval_s: float = 1.0):
        self.samples: list[float] = []
        self._kafka, self._instance, self._interval_s = kafka, instance, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        consumer = self._kafka.consumer(self._kafka.consumer_group)
        topics = self._kafka.topics().all_ingest()
        try:
            while not self._stop.wait(self._interval_s):
                self.samples.append(lag_seconds(consumer, self._instance, topics))
        finally:
            consumer.close()

    def __enter__(self) -> LagSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def indexed_at(instance: DagsterInstance) -> dict[Offset, float]:
    """When each message's successful run ended, by its source offset."""
    done = {}
    for record in instance.get_run_records(RunsFilter(job_name=JOB)):
        tags = record.dagster_run.tags
        if record.dagster_run.status.value == "SUCCESS" and record.end_time:
            key = (tags["kb/source-topic"], int(tags["kb/source-partition"]))
            done[(*key, int(tags["kb/source-offset"]))] = record.end_time
    return done


def run_phases(instance: DagsterInstance, produced_at: dict[Offset, float]) -> dict[str, list]:
    """Seconds of each phase of every run: from the message to the run, its launch, start-up,
    resource initialisation, each step, and the run's end after its last step."""
    phases: dict[str, list[float]] = collections.defaultdict(list)
    for record in instance.get_run_records(RunsFilter(job_name=JOB)):
        run = record.dagster_run
        source = (
            run.tags.get("kb/source-topic", ""),
            int(run.tags.get("kb/source-partition", "-1")),
            int(run.tags.get("kb/source-offset", "-1")),
        )
        created = record.create_timestamp.timestamp()
        if source in produced_at:
            phases["message -> run requested (sensor)"].append(created - produced_at[source])
        at: dict[str, float] = {}
        for event in instance.all_logs(run.run_id):
            kind = event.dagster_event_type
            if kind is None:
                continue
            if kind is DagsterEventType.ENGINE_EVENT and "handed to warm worker" in event.message:
                at.setdefault("launched", event.timestamp)
            elif kind in (DagsterEventType.RUN_START, DagsterEventType.RESOURCE_INIT_STARTED):
                at.setdefault(kind.value, event.timestamp)
            elif kind is DagsterEventType.RESOURCE_INIT_SUCCESS:
                at.setdefault("resources", event.timestamp)
            elif kind is DagsterEventType.STEP_START:
                at.setdefault("first_step", event.timestamp)
            elif kind in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
                at["last_step"] = event.timestamp
            elif kind in (DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE):
                at["end"] = event.timestamp
        spans = {
            "run requested -> launched (queue)": ("created", "launched"),
            "launched -> run start (worker)": ("launched", DagsterEventType.RUN_START.value),
            "run start -> first step": (DagsterEventType.RUN_START.value, "first_step"),
            "resource init": (DagsterEventType.RESOURCE_INIT_STARTED.value, "resources"),
            "last step -> run end": ("last_step", "end"),
        }
        at["created"] = created
        for name, (begin, end) in spans.items():
            if begin in at and end in at:
                phases[name].append(at[end] - at[begin])
        for stats in instance.get_run_step_stats(run.run_id):
            if stats.end_time and stats.start_time:
                phases[f"step {stats.step_key}"].append(stats.end_time - stats.start_time)
    return phases


def print_phases(phases: dict[str, list[float]]) -> None:
    print("| phase | runs | mean s | p95 s | total s |")
    print("|---|---|---|---|---|")
    for name, values in phases.items():
        p95 = statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]
        print(
            f"| {name} | {len(values)} | {statistics.mean(values):.2f} | {p95:.2f} | "
            f"{sum(values):.1f} |"
        )
