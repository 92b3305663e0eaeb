"""The faults of the matrix: how each is made and cleared on the real deployment and services."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import NewPartitions
from dagster import DagsterInstance
from elasticsearch import Elasticsearch

from kb_platform.contracts import Modality
from kb_platform.resources.kafka import KafkaResource
from kb_platform.serving.launcher import ServiceProcess
from kb_platform_tests.faults.deployment import Deployment
from kb_platform_tests.local_services import local_service
from kb_platform_tests.ports import free_port

FILLER = ".disk-full-filler"


@dataclass
class Matrix:
    """What the faults act on: the deployment, its topics, index, blob store and services."""

    deployment: Deployment
    instance: DagsterInstance
    kafka: KafkaResource
    es: Elasticsearch
    alias: str
    docs: Path
    body: str
    blob_dir: Path
    encoder: ServiceProcess
    crash_marker: str


@dataclass(frozen=True)
class Fault:
    name: str
    inject: Callable[[Matrix], None]
    clear: Callable[[Matrix], None]
    hold_s: float = 10.0  # how long the fault lasts
    expect_dead_letters: int = 0
    poison_at: int | None = None  # the stream's document that carries the crash marker
    documents: int = 6  # produced one every 2 s, from before the fault to after it clears
    # what else must hold afterwards, given the locations that launched the stream's runs
    locations: frozenset[str] | None = None


def _nothing(_: Matrix) -> None:
    return None


def _kill_daemon(m: Matrix) -> None:
    m.deployment.processes["daemon"].kill()  # with its warm run workers, as a pod dies


def _start_daemon(m: Matrix) -> None:
    m.deployment.start("daemon")


def _stop_code_server(m: Matrix) -> None:
    m.deployment.processes["code_server"].stop()


def _start_code_server(m: Matrix) -> None:
    m.deployment.start("code_server")


def _add_partitions(m: Matrix) -> None:
    topic = m.kafka.topics().ingest(Modality.TEXT)
    admin = m.kafka.admin()
    current = len(admin.list_topics(topic, timeout=10).topics[topic].partitions)
    for future in admin.create_partitions([NewPartitions(topic, current + 2)]).values():
        future.result(timeout=30)


def _group_partitions(m: Matrix, offset: int) -> list[TopicPartition]:
    metadata = m.kafka.admin().list_topics(timeout=10)
    return [
        TopicPartition(topic, p, offset)
        for topic in m.kafka.topics().all_ingest()
        for p in metadata.topics[topic].partitions
    ]


def _reset_offsets(m: Matrix) -> None:
    admin = m.kafka.admin()
    request = ConsumerGroupTopicPartitions(m.kafka.consumer_group, _group_partitions(m, 0))
    for future in admin.alter_consumer_group_offsets([request]).values():
        future.result(timeout=30)


def _delete_group(m: Matrix) -> None:
    admin = m.kafka.admin()  # kept referenced: a dropped client never completes its futures
    for future in admin.delete_consumer_groups([m.kafka.consumer_group]).values():
        future.result(timeout=30)


def _disk_full(m: Matrix) -> None:
    """Takes what is free while documents written meanwhile race for it: tmpfs undoes an
    allocation that fails with ENOSPC, so a failed one is tried again with half as much."""
    with (m.blob_dir / FILLER).open("wb") as handle:
        chunk = shutil.disk_usage(m.blob_dir).free
        for _ in range(200):
            free = shutil.disk_usage(m.blob_dir).free
            if free < 64 * 1024:
                return
            size = min(chunk, free)
            try:
                os.posix_fallocate(handle.fileno(), os.fstat(handle.fileno()).st_size, size)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                chunk = max(size // 2, 4096)
    raise AssertionError(f"{m.blob_dir} still has {shutil.disk_usage(m.blob_dir).free} B free")


def _disk_freed(m: Matrix) -> None:
    (m.blob_dir / FILLER).unlink()


def _stop_encoder(m: Matrix) -> None:
    m.encoder.stop()


def _start_encoder(m: Matrix) -> None:
    m.encoder.start()
    m.encoder.wait_ready(timeout=300)


def _green_alongside_blue(m: Matrix) -> None:
    """The switch's first half: a second code location (same code, its own name, as a new
    user deployment gets) on the same instance, both in the daemon's workspace."""
    d = m.deployment
    port = free_port()
    d.add_code_server("code_server_green", "green", port)
    d.write_workspace([(d.location, d.code_port), ("green", port)])
    d.restart("daemon")


def _blue_removed(m: Matrix) -> None:
    """The second half: the old location goes away; its sensor's lease lapses and green's
    sensor reads on from the committed offsets."""
    m.deployment.processes["code_server"].stop()


def _restart(name: str) -> tuple[Callable[[Matrix], None], Callable[[Matrix], None]]:
    return (lambda _: local_service(name, "down")), (lambda _: local_service(name, "up"))


FAULTS = [
    Fault("daemon killed mid-ingest", _kill_daemon, _start_daemon),
    Fault("code server redeployed", _stop_code_server, _start_code_server, hold_s=5),
    Fault("instance database restarted", *_restart("postgres")),
    Fault("kafka broker restarted", *_restart("kafka")),
    Fault("elasticsearch restarted", *_restart("elasticsearch"), hold_s=15),
    Fault("encoder service stopped", _stop_encoder, _start_encoder, hold_s=20),
    Fault("blob store disk full", _disk_full, _disk_freed, hold_s=20),
    Fault("partitions added", _add_partitions, _nothing, hold_s=0),
    Fault("committed offsets reset", _reset_offsets, _nothing, hold_s=0),
    Fault("consumer group deleted", _delete_group, _nothing, hold_s=0),
    Fault(
        "worker crashes natively",
        _nothing,
        _nothing,
        hold_s=0,
        expect_dead_letters=1,
        poison_at=1,
    ),
    # last: blue's code location is gone afterwards
    Fault(
        "blue/green: two locations read",
        _green_alongside_blue,
        _blue_removed,
        # The runs the daemon restart killed are retried in blue's location while blue serves
        # them. On a loaded machine run monitoring can find one dead only after blue is gone:
        # once the daemon has seen blue's server go, that retry cannot be made (Dagster tags the
        # run dagster/will_retry=false) and green, holding the lease, adopts it
        # (adopt_orphaned_runs; the table's "adopted" column counts them).
        hold_s=45,
        documents=40,  # ~30 s of them after blue is gone: green's sensor takes them over
        locations=frozenset({"kb_platform", "green"}),
    ),
]
