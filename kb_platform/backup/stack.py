"""What holds a stack's state, in one place: its chunk index family and snapshot repository,
its Dagster instance database, its object-store folders and its ingest consumer group. Built
from ``Settings`` (and ``DAGSTER_HOME``) for the command line; tests and benchmarks build
their own with their own names."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import AdminClient
from elasticsearch import Elasticsearch

from kb_platform.backup import instance_db
from kb_platform.backup.es_snapshots import Repository
from kb_platform.backup.instance_db import InstanceDb
from kb_platform.config import REPO_ROOT, Environment, Settings
from kb_platform.index.client import elasticsearch_client
from kb_platform.index.mapping import IndexNames
from kb_platform.kafka.topics import Topics


@dataclass
class Stack:
    es: Elasticsearch
    names: IndexNames
    repository: Repository
    instance: InstanceDb
    trees: dict[str, Path]  # object-store folders by name
    admin: AdminClient
    group: str
    topics: list[str]  # the ingest topics whose committed offsets count
    replicas: int = 0
    labels: dict[str, str] = field(default_factory=dict)

    def describe(self) -> dict[str, object]:
        return {
            "index_base": self.names.base,
            "repository": self.repository.name,
            "instance": self.instance.describe(),
            "trees": {name: str(path) for name, path in self.trees.items()},
            "consumer_group": self.group,
            "topics": self.topics,
        }

    def close(self) -> None:
        self.es.close()


def object_trees(settings: Settings) -> dict[str, Path]:
    """The data dir, and the CLIP folder where it is configured outside it. None in production,
    where the object store is the S3 bucket: this backup does not copy it (s3fs is not
    installed; bucket versioning and replication protect it, docs/disaster-recovery.md)."""
    if settings.env is Environment.PROD:
        return {}
    trees = {"data": settings.data_dir}
    clip = settings.clip_root
    if not clip.resolve().is_relative_to(settings.data_dir.resolve()):
        trees["clip"] = clip
    return trees


def kafka_admin(settings: Settings) -> AdminClient:
    config = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "security.protocol": settings.kafka_security_protocol,
        "client.id": "kb-platform-backup",
    }
    if settings.kafka_sasl_mechanism:  # the secrets as the resources read them
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism
        config["sasl.username"] = os.environ.get("KB_KAFKA_SASL_USERNAME", "")
        config["sasl.password"] = os.environ.get("KB_KAFKA_SASL_PASSWORD", "")
    return AdminClient(config)


def from_settings(settings: Settings, dagster_home: Path | None = None) -> Stack:
    home = dagster_home or Path(os.environ.get("DAGSTER_HOME", REPO_ROOT / ".dagster_home"))
    topics = Topics(
        ingest_prefix=settings.kafka_ingest_topic_prefix,
        dlq_prefix=settings.kafka_dlq_topic_prefix,
        audit=settings.kafka_audit_topic,
    )
    return Stack(
        es=elasticsearch_client(
            settings.elasticsearch_url,
            api_key=os.environ.get("KB_ELASTICSEARCH_API_KEY"),
            request_timeout=max(settings.elasticsearch_request_timeout_s, 300.0),
        ),
        names=IndexNames(settings.elasticsearch_index_base),
        repository=Repository.from_settings(settings),
        instance=instance_db.from_dagster_home(home),
        trees=object_trees(settings),
        admin=kafka_admin(settings),
        group=settings.kafka_consumer_group,
        topics=topics.all_ingest(),
        replicas=settings.elasticsearch_replicas,
    )
