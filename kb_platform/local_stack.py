"""The environment of a `dagster dev` of its own (deploy/local/dagster/dagster.sh) for tests and
benchmarks: instance, data and local-service folders under one base folder, and an index family
and Kafka topics and consumer group that no other stack uses."""

from __future__ import annotations

import os
from pathlib import Path

from kb_platform.config import REPO_ROOT
from kb_platform.resources.kafka import KafkaResource

DAGSTER_SCRIPT = REPO_ROOT / "deploy" / "local" / "dagster" / "dagster.sh"


def dagster_dev_env(base: Path, port: str, index_base: str, kafka: KafkaResource) -> dict[str, str]:
    """This process's environment plus what points `dagster.sh` at ``base``, ``port``,
    ``index_base`` and ``kafka``'s names."""
    return {
        **os.environ,
        "DAGSTER_HOME": str(base / "dagster_home"),
        "KB_LOCAL_DIR": str(base / "local"),
        "KB_DATA_DIR": str(base / "data"),
        "KB_DAGSTER_PORT": port,
        "KB_ELASTICSEARCH_INDEX_BASE": index_base,
        "KB_KAFKA_INGEST_TOPIC_PREFIX": kafka.ingest_topic_prefix,
        "KB_KAFKA_DLQ_TOPIC_PREFIX": kafka.dlq_topic_prefix,
        "KB_KAFKA_AUDIT_TOPIC": kafka.audit_topic,
        "KB_KAFKA_CONSUMER_GROUP": kafka.consumer_group,
    }
